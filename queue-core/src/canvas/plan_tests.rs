//! What plans publish, checked against the shapes Celery sends (wire spec §8).

use serde_json::json;

use super::*;
use crate::canvas::{chunks, map};

fn task(name: &str) -> Signature {
    Signature::new(name)
}

fn planned(signature: Signature) -> (Plan, Frozen) {
    Plan::of(signature, Context::default()).expect("a valid canvas")
}

#[test]
fn a_chain_publishes_its_first_task_with_the_rest_next_last() {
    let (plan, frozen) = planned(chain([task("a").arg(1), task("b"), task("c")]));
    assert!(plan.chords.is_empty());
    assert_eq!(plan.messages.len(), 1);
    let first = &plan.messages[0];
    assert_eq!(first.signature.name, "a");
    let names: Vec<&str> = first.chain.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["c", "b"], "next task last");
    // Every id is known before anything runs: the result is the last task's.
    let last_id = first.chain[0].options.task_id.clone().expect("frozen");
    assert_eq!(frozen, Frozen::Task(last_id));
    assert!(first.chain[1].options.task_id.is_some());
}

#[test]
fn a_parents_result_goes_first_unless_immutable() {
    let context = Context::with_result(json!(4));
    let (plan, _) = Plan::of(task("mul").arg(8), context.clone()).unwrap();
    assert_eq!(plan.messages[0].signature.args, [json!(4), json!(8)]);
    let (plan, _) = Plan::of(task("mul").arg(8).immutable(), context).unwrap();
    assert_eq!(plan.messages[0].signature.args, [json!(8)]);
}

#[test]
fn a_group_publishes_its_members_with_group_and_index() {
    let (plan, frozen) = planned(group([task("a"), task("b"), group([task("c")])]));
    let Frozen::Group { id, members } = frozen else {
        panic!("a group's result")
    };
    assert_eq!(members.len(), 3, "nested groups flattened");
    for (index, message) in plan.messages.iter().enumerate() {
        assert_eq!(
            message.signature.options.group_id.as_deref(),
            Some(id.as_str())
        );
        assert_eq!(message.signature.options.group_index, Some(index as u64));
    }
}

#[test]
fn a_chord_starts_its_join_and_its_header_carries_the_body() {
    let (plan, frozen) = planned(chord([task("a"), task("b")], task("sum")));
    assert_eq!(plan.chords.len(), 1);
    let (header_id, size) = &plan.chords[0];
    assert_eq!(*size, 2);
    assert_eq!(plan.messages.len(), 2);
    let body_id = frozen.id().to_owned();
    for (index, message) in plan.messages.iter().enumerate() {
        let options = &message.signature.options;
        assert_eq!(options.group_id.as_ref(), Some(header_id));
        assert_eq!(options.group_index, Some(index as u64));
        let body = options.chord.as_ref().expect("the body rides along");
        assert_eq!(body.name, "sum");
        assert_eq!(body.options.task_id.as_deref(), Some(body_id.as_str()));
        // Celery: the body's message names the header's group.
        assert_eq!(body.options.group_id.as_ref(), Some(header_id));
    }
}

#[test]
fn an_empty_chord_header_runs_the_body_with_no_results() {
    let (plan, _) = planned(chord(Vec::<Signature>::new(), task("sum")));
    assert!(plan.chords.is_empty());
    assert_eq!(plan.messages[0].signature.args, [json!([])]);
}

#[test]
fn a_group_in_a_chain_followed_by_a_task_becomes_a_chord() {
    let (plan, frozen) = planned(chain([task("a"), group([task("b"), task("c")]), task("d")]));
    assert_eq!(plan.messages.len(), 1, "only the first task goes out");
    let next = &plan.messages[0].chain[0];
    assert_eq!(next.subtask_type.as_deref(), Some("chord"));
    match Shape::of(next).unwrap() {
        Shape::Chord { header, body } => {
            assert_eq!(header.len(), 2);
            assert_eq!(body.name, "d");
            assert_eq!(frozen, Frozen::Task(body.options.task_id.clone().unwrap()));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_chord_in_a_chain_takes_the_rest_into_its_body() {
    let (plan, frozen) = planned(chain([chord([task("a")], task("b")), task("c")]));
    assert_eq!(plan.chords.len(), 1);
    let body = plan.messages[0].signature.options.chord.as_ref().unwrap();
    match Shape::of(body).unwrap() {
        Shape::Chain(steps) => {
            let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, ["b", "c"]);
            assert_eq!(
                frozen,
                Frozen::Task(steps[1].options.task_id.clone().unwrap())
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_chain_in_a_group_gives_its_membership_to_its_last_task() {
    let (plan, frozen) = planned(group([chain([task("a"), task("b")]), task("c")]));
    let Frozen::Group { id, members } = frozen else {
        panic!("a group's result")
    };
    let first = &plan.messages[0];
    assert_eq!(first.signature.name, "a");
    assert_eq!(first.signature.options.group_id, None);
    let last = &first.chain[0];
    assert_eq!(last.options.group_id.as_deref(), Some(id.as_str()));
    assert_eq!(last.options.group_index, Some(0));
    assert_eq!(
        members[0],
        Frozen::Task(last.options.task_id.clone().unwrap())
    );
}

#[test]
fn malformed_canvas_is_an_error() {
    let broken = Signature {
        subtask_type: Some("chain".into()),
        ..task("celery.chain")
    };
    assert!(Plan::of(broken, Context::default()).is_err());
    let unknown = Signature {
        subtask_type: Some("regroup".into()),
        ..task("celery.regroup")
    };
    assert!(matches!(
        Plan::of(unknown, Context::default()),
        Err(CanvasError::Unsupported(_))
    ));
}

#[test]
fn map_is_one_message_and_chunks_a_group_of_starmaps() {
    let (plan, frozen) = planned(map(task("double"), [1, 2, 3]));
    assert_eq!(plan.messages.len(), 1);
    let message = &plan.messages[0].signature;
    assert_eq!(message.name, "celery.map");
    assert_eq!(message.kwargs["it"], json!([1, 2, 3]));
    assert_eq!(message.kwargs["task"]["task"], "double");
    assert!(matches!(frozen, Frozen::Task(_)));
    let pairs: Vec<[i64; 2]> = (0..10).map(|i| [i, i]).collect();
    let (plan, frozen) = planned(chunks(task("add"), pairs, 4));
    let Frozen::Group { members, .. } = frozen else {
        panic!("chunks are a group")
    };
    assert_eq!(members.len(), 3, "4 + 4 + 2");
    assert!(
        plan.messages
            .iter()
            .all(|m| m.signature.name == "celery.starmap")
    );
    assert_eq!(
        plan.messages[2].signature.kwargs["it"],
        json!([[8, 8], [9, 9]])
    );
}
