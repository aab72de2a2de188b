//! [`Plan`]: what sending (or, in a worker, applying) a canvas publishes now, with every
//! id it will produce frozen in advance, as Celery's `freeze` does — so that the sender
//! holds the final result's id before anything ran.
//!
//! The rules are Celery's (wire spec §8): a chain publishes its first task and carries the
//! rest in that message's `chain` field, next task last; nested chains are flattened; a
//! group followed by more becomes a chord whose body is the rest; a chord followed by more
//! takes the rest into its body. A group publishes each member with `group` and
//! `group_index`; a chord publishes its header as a group whose members carry the body in
//! `chord`, once the backend knows the header's size. A member that is a chain takes the
//! group membership (and the chord) on its last task, whose result is the member's.

use serde_json::Value;

use super::{CanvasError, Shape, chain, chord, group};
use crate::signature::Signature;

/// One task message of a plan: a plain task, ids frozen.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// The task (its `options.chord` is the chord body when it is a header part).
    pub signature: Signature,
    /// The tasks after it, next task last (Celery's `chain` field order).
    pub chain: Vec<Signature>,
}

/// The ids a canvas produces: one task's, or a group's and its members'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frozen {
    /// The result is this task's.
    Task(String),
    /// The results are the members' of this group.
    Group {
        /// Group id.
        id: String,
        /// The members' results, in order.
        members: Vec<Frozen>,
    },
}

impl Frozen {
    /// The id a single result is read by: a task's, or a group's.
    pub fn id(&self) -> &str {
        match self {
            Self::Task(id) | Self::Group { id, .. } => id,
        }
    }
}

/// What to do to send a canvas: start these chord joins, then publish these messages.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// `(group id, header size)` of each chord, to start on the backend before publishing.
    pub chords: Vec<(String, u64)>,
    /// The messages, in order.
    pub messages: Vec<Planned>,
}

/// Where a signature is applied: the parent's result and ids, and what it belongs to.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// The parent's result, prepended to the args of a mutable signature.
    pub incoming: Option<Value>,
    /// The task that applies it (a worker finishing a chain step or a chord).
    pub parent_id: Option<String>,
    /// The first task of the workflow.
    pub root_id: Option<String>,
    /// Group id and index it is a member of.
    group: Option<(String, u64)>,
    /// The chord body it is a header part of.
    chord: Option<Signature>,
    /// The tasks to run after it, in run order.
    rest: Vec<Signature>,
}

impl Context {
    /// A context with the parent's result `incoming` (a chain step, a chord body).
    pub fn with_result(incoming: Value) -> Self {
        Self {
            incoming: Some(incoming),
            ..Self::default()
        }
    }

    /// Applied by task `parent_id` of the workflow `root_id`.
    pub fn from_parent(mut self, parent_id: impl Into<String>, root_id: impl Into<String>) -> Self {
        self.parent_id = Some(parent_id.into());
        self.root_id = Some(root_id.into());
        self
    }

    /// Followed by `rest` (in run order): the remainder of a chain.
    pub fn followed_by(mut self, rest: Vec<Signature>) -> Self {
        self.rest = rest;
        self
    }
}

impl Plan {
    /// Plans `signature` (a task or a canvas) in `context`; returns the plan and the ids of
    /// what it produces.
    pub fn of(signature: Signature, context: Context) -> Result<(Self, Frozen), CanvasError> {
        let mut plan = Self::default();
        let frozen = plan.apply(signature, context)?;
        Ok((plan, frozen))
    }

    fn apply(&mut self, signature: Signature, context: Context) -> Result<Frozen, CanvasError> {
        let signature = links_distributed(signature)?;
        match Shape::of(&signature)? {
            Shape::Task => self.task(signature, context),
            Shape::Chain(tasks) => {
                let mut tasks = tasks;
                tasks.extend(context.rest.iter().cloned());
                let mut tasks = normalized(tasks)?;
                if tasks.is_empty() {
                    return Err(CanvasError::Malformed {
                        kind: "chain",
                        reason: "no tasks".into(),
                    });
                }
                let first = tasks.remove(0);
                let mut rest = tasks;
                match rest.last_mut() {
                    Some(last) => {
                        // The chain's result, group membership and chord are its last task's.
                        belong(last, &context)?;
                        let first_context = Context {
                            group: None,
                            chord: None,
                            rest,
                            ..context
                        };
                        self.apply(first, first_context)
                    }
                    None => self.apply(
                        first,
                        Context {
                            rest: Vec::new(),
                            ..context
                        },
                    ),
                }
            }
            Shape::Group(members) => {
                if !context.rest.is_empty() {
                    // A group followed by more is a chord (Celery upgrades it).
                    let upgraded = upgrade(&signature, members, context.rest.clone());
                    return self.apply(
                        upgraded,
                        Context {
                            rest: Vec::new(),
                            ..context
                        },
                    );
                }
                let id = signature.options.task_id.clone().unwrap_or_else(new_id);
                let members = flattened(members)?;
                let mut frozen = Vec::with_capacity(members.len());
                for (index, member) in members.into_iter().enumerate() {
                    let member_context = Context {
                        group: Some((id.clone(), index as u64)),
                        rest: Vec::new(),
                        ..context.clone()
                    };
                    frozen.push(self.apply(inherit(member, &signature), member_context)?);
                }
                Ok(Frozen::Group {
                    id,
                    members: frozen,
                })
            }
            Shape::Chord { header, body } => {
                let mut body = *body;
                if !context.rest.is_empty() {
                    let mut tasks = vec![body];
                    tasks.extend(context.rest.iter().cloned());
                    body = one_or_chain(tasks);
                }
                let header_id = signature.options.group_id.clone().unwrap_or_else(new_id);
                let header = flattened(header)?;
                let result = freeze(&mut body)?;
                if let Frozen::Task(_) = result {
                    // Celery: the body's message names the header's group.
                    set_group(&mut body, &header_id);
                }
                belong(&mut body, &context)?;
                if header.is_empty() {
                    // Nothing to wait for: the body runs with no results.
                    let now = Context {
                        incoming: Some(Value::Array(Vec::new())),
                        group: None,
                        chord: None,
                        rest: Vec::new(),
                        ..context
                    };
                    return self.apply(body, now);
                }
                self.chords.push((header_id.clone(), header.len() as u64));
                for (index, member) in header.into_iter().enumerate() {
                    let member_context = Context {
                        group: Some((header_id.clone(), index as u64)),
                        chord: Some(body.clone()),
                        rest: Vec::new(),
                        ..context.clone()
                    };
                    self.apply(inherit(member, &signature), member_context)?;
                }
                Ok(result)
            }
        }
    }

    fn task(&mut self, mut signature: Signature, context: Context) -> Result<Frozen, CanvasError> {
        if let (Some(incoming), false) = (&context.incoming, signature.immutable) {
            signature.args.insert(0, incoming.clone());
        }
        let id = signature.options.task_id.get_or_insert_with(new_id).clone();
        if signature.options.parent_id.is_none() {
            signature.options.parent_id = context.parent_id.clone();
        }
        if signature.options.root_id.is_none() {
            signature.options.root_id = context.root_id.clone();
        }
        if let Some((group_id, index)) = &context.group {
            signature.options.group_id = Some(group_id.clone());
            signature.options.group_index = Some(*index);
        }
        if let Some(body) = &context.chord {
            signature.options.chord = Some(Box::new(body.clone()));
        }
        let mut rest = context.rest;
        let mut result = Frozen::Task(id);
        for task in rest.iter_mut() {
            result = freeze(task)?;
        }
        rest.reverse();
        self.messages.push(Planned {
            signature,
            chain: rest,
        });
        Ok(result)
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// One task as itself, more as a chain.
fn one_or_chain(mut tasks: Vec<Signature>) -> Signature {
    if tasks.len() == 1 {
        tasks.remove(0)
    } else {
        chain(tasks)
    }
}

/// `group` followed by `rest`, as the chord Celery makes of it (the group's id becomes the
/// header's).
fn upgrade(
    group_signature: &Signature,
    members: Vec<Signature>,
    rest: Vec<Signature>,
) -> Signature {
    let mut upgraded = chord(members, one_or_chain(rest));
    upgraded.options = group_signature.options.clone();
    upgraded.options.group_id = group_signature.options.task_id.clone();
    upgraded.options.task_id = None;
    upgraded
}

/// A chain's tasks with nested chains flattened, and a group or chord that is followed by
/// more turned into a chord taking the rest as its body.
fn normalized(tasks: Vec<Signature>) -> Result<Vec<Signature>, CanvasError> {
    let mut flat = Vec::with_capacity(tasks.len());
    for task in tasks {
        match Shape::of(&task)? {
            Shape::Chain(inner) => flat.extend(normalized(inner)?),
            _ => flat.push(task),
        }
    }
    let mut out = Vec::with_capacity(flat.len());
    let mut tasks = flat.into_iter();
    while let Some(task) = tasks.next() {
        let rest: Vec<Signature> = match Shape::of(&task)? {
            Shape::Group(_) | Shape::Chord { .. } => tasks.by_ref().collect(),
            Shape::Task | Shape::Chain(_) => Vec::new(),
        };
        if rest.is_empty() {
            out.push(task);
            continue;
        }
        let folded = match Shape::of(&task)? {
            Shape::Group(members) => upgrade(&task, members, rest),
            Shape::Chord { header, body } => {
                let mut steps = vec![*body];
                steps.extend(rest);
                let mut folded = chord(header, one_or_chain(steps));
                folded.options = task.options.clone();
                folded
            }
            _ => task,
        };
        out.push(folded);
    }
    Ok(out)
}

/// Members of a group with nested plain groups flattened into it.
fn flattened(members: Vec<Signature>) -> Result<Vec<Signature>, CanvasError> {
    let mut out = Vec::with_capacity(members.len());
    for member in members {
        match Shape::of(&member)? {
            Shape::Group(inner) => out.extend(flattened(inner)?),
            _ => out.push(member),
        }
    }
    Ok(out)
}

/// A member takes the group's own routing options where it has none (as Celery passes a
/// group's apply options to its members).
fn inherit(mut member: Signature, parent: &Signature) -> Signature {
    let options = &mut member.options;
    if options.queue.is_none() {
        options.queue.clone_from(&parent.options.queue);
    }
    if options.priority.is_none() {
        options.priority = parent.options.priority;
    }
    member
}

/// Puts the group membership and chord of `context` on `signature`'s result-giving task:
/// a task itself, a chain's last task, a chord's body.
fn belong(signature: &mut Signature, context: &Context) -> Result<(), CanvasError> {
    if context.group.is_none() && context.chord.is_none() {
        return Ok(());
    }
    match Shape::of(signature)? {
        Shape::Task => {
            if let Some((group_id, index)) = &context.group {
                signature.options.group_id = Some(group_id.clone());
                signature.options.group_index = Some(*index);
            }
            if let Some(body) = &context.chord {
                signature.options.chord = Some(Box::new(body.clone()));
            }
            Ok(())
        }
        Shape::Chain(mut tasks) => {
            if let Some(last) = tasks.last_mut() {
                belong(last, context)?;
            }
            *signature = rebuilt(signature, chain(tasks));
            Ok(())
        }
        Shape::Chord { header, mut body } => {
            belong(&mut body, context)?;
            *signature = rebuilt(signature, chord(header, *body));
            Ok(())
        }
        Shape::Group(_) => Err(CanvasError::Unsupported(
            "a group as the last step of a group member or chord part".into(),
        )),
    }
}

/// A canvas's own callbacks and errbacks put where Celery puts them: a chain's errbacks on
/// every step and its callbacks on the last; a group's on every member; a chord's on its
/// body. A plain task keeps its own.
fn links_distributed(mut signature: Signature) -> Result<Signature, CanvasError> {
    if signature.options.link.is_empty() && signature.options.link_error.is_empty() {
        return Ok(signature);
    }
    let shape = Shape::of(&signature)?;
    if shape == Shape::Task {
        return Ok(signature);
    }
    let link = std::mem::take(&mut signature.options.link);
    let link_error = std::mem::take(&mut signature.options.link_error);
    let add = |member: &mut Signature, link: &[Signature], link_error: &[Signature]| {
        member.options.link.extend(link.iter().cloned());
        member.options.link_error.extend(link_error.iter().cloned());
    };
    Ok(match shape {
        Shape::Task => signature,
        Shape::Chain(mut tasks) => {
            for task in &mut tasks {
                add(task, &[], &link_error);
            }
            if let Some(last) = tasks.last_mut() {
                add(last, &link, &[]);
            }
            rebuilt(&signature, chain(tasks))
        }
        Shape::Group(mut members) => {
            for member in &mut members {
                add(member, &link, &link_error);
            }
            rebuilt(&signature, group(members))
        }
        Shape::Chord { header, mut body } => {
            add(&mut body, &link, &link_error);
            rebuilt(&signature, chord(header, *body))
        }
    })
}

/// `built` with `original`'s options and immutability.
fn rebuilt(original: &Signature, mut built: Signature) -> Signature {
    built.options = original.options.clone();
    built.immutable = original.immutable;
    built
}

/// The body of a chord names the header's group (as Celery's frozen body does).
fn set_group(body: &mut Signature, header_id: &str) {
    if body.options.group_id.is_none() {
        body.options.group_id = Some(header_id.to_owned());
    }
}

/// Assigns every id `signature` will produce (tasks, groups, chord headers) and returns
/// the ids of its result; nothing is published.
pub fn freeze(signature: &mut Signature) -> Result<Frozen, CanvasError> {
    match Shape::of(signature)? {
        Shape::Task => Ok(Frozen::Task(
            signature.options.task_id.get_or_insert_with(new_id).clone(),
        )),
        Shape::Chain(mut tasks) => {
            let mut result = None;
            for task in &mut tasks {
                result = Some(freeze(task)?);
            }
            *signature = rebuilt(signature, chain(tasks));
            result.ok_or(CanvasError::Malformed {
                kind: "chain",
                reason: "no tasks".into(),
            })
        }
        Shape::Group(mut members) => {
            let id = signature.options.task_id.get_or_insert_with(new_id).clone();
            let mut frozen = Vec::with_capacity(members.len());
            for member in &mut members {
                frozen.push(freeze(member)?);
            }
            *signature = rebuilt(signature, group(members));
            Ok(Frozen::Group {
                id,
                members: frozen,
            })
        }
        Shape::Chord { header, mut body } => {
            let header_id = signature
                .options
                .group_id
                .get_or_insert_with(new_id)
                .clone();
            let result = freeze(&mut body)?;
            set_group(&mut body, &header_id);
            *signature = rebuilt(signature, chord(header, *body));
            Ok(result)
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
