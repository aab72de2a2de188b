//! Analysis of the function under `#[task]`: which parameters are arguments and which receive
//! the `TaskContext`, what the function returns, and what it may not do (generics, `self`,
//! borrowed parameters, patterns).

use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, ReturnType, Type,
    TypePath, TypeReference,
};

/// What the task function is made of, once checked.
pub struct TaskFn {
    /// The original function: its signature and body become `add::call`.
    pub item: ItemFn,
    /// `///` comments and `#[doc]`: moved to the generated struct.
    pub docs: Vec<Attribute>,
    /// `#[cfg]`: applied to everything generated.
    pub cfgs: Vec<Attribute>,
    /// Any other attribute: kept on `add::call`.
    pub others: Vec<Attribute>,
    /// The task name as Python sees it (raw identifiers unescaped).
    pub fn_name: String,
    /// Parameters in declaration order.
    pub params: Vec<Param>,
    /// How many parameters are task arguments (not context).
    pub argument_count: usize,
    /// What the function returns.
    pub output: Output,
}

/// One parameter of the task function.
pub struct Param {
    /// The binding, without `mut`.
    pub ident: Ident,
    /// The declared type.
    pub ty: Type,
    /// Argument or context.
    pub kind: ParamKind,
}

/// How a parameter is filled when the task runs.
pub enum ParamKind {
    /// A task argument: positional number `index` among arguments, or keyword `name`.
    Argument { index: usize, name: String },
    /// The `TaskContext` of the run, by value (`TaskContext`) or borrowed (`&TaskContext`).
    Context { by_ref: bool },
}

/// The return type of the task function.
pub enum Output {
    /// Nothing, or `()`: stored as `null`.
    Unit,
    /// A value that serializes.
    Value(Box<Type>),
    /// `Result<T, E>`: `ok` is `T`; `error` is `E` when written out (not with an alias
    /// such as `io::Result<T>`).
    Result {
        ok: Box<Type>,
        error: Option<Box<Type>>,
    },
}

impl Output {
    /// The type a successful run yields: what `AsyncResult::get` returns. A borrowed
    /// `&'static str` comes back from the result store as an owned `String`.
    pub fn success_type(&self) -> proc_macro2::TokenStream {
        match self {
            Output::Unit => quote::quote!(()),
            Output::Value(ty) | Output::Result { ok: ty, .. } => match ty.as_ref() {
                Type::Reference(reference) if is_str(&reference.elem) => {
                    quote::quote!(::std::string::String)
                }
                other => other.to_token_stream(),
            },
        }
    }
}

fn is_str(ty: &Type) -> bool {
    matches!(ty, Type::Path(path) if path.qself.is_none() && path.path.is_ident("str"))
}

/// Collects errors so that all of them are reported at once.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// An error pointing at all of `tokens` (a span covering them, also on stable Rust).
    pub fn error(&mut self, tokens: &impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    pub fn into_result(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Checks `item` and describes it; every problem found is reported.
pub fn analyze(item: ItemFn) -> syn::Result<TaskFn> {
    let mut errors = Errors::default();
    check_qualifiers(&item, &mut errors);

    let mut params = Vec::new();
    let mut argument_count = 0;
    for input in &item.sig.inputs {
        if let Some(param) = analyze_param(input, argument_count, &mut errors) {
            if matches!(param.kind, ParamKind::Argument { .. }) {
                argument_count += 1;
            }
            params.push(param);
        }
    }
    let output = analyze_output(&item.sig.output, &mut errors);
    errors.into_result()?;

    let (mut docs, mut cfgs, mut others) = (Vec::new(), Vec::new(), Vec::new());
    for attribute in &item.attrs {
        let path = attribute.path();
        if path.is_ident("doc") {
            docs.push(attribute.clone());
        } else if path.is_ident("cfg") {
            cfgs.push(attribute.clone());
        } else {
            others.push(attribute.clone());
        }
    }
    Ok(TaskFn {
        fn_name: item.sig.ident.unraw().to_string(),
        docs,
        cfgs,
        others,
        params,
        argument_count,
        output,
        item,
    })
}

/// Generics, `unsafe`, foreign ABIs and variadics have no meaning for a task.
fn check_qualifiers(item: &ItemFn, errors: &mut Errors) {
    let sig = &item.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.error(
            &sig.generics,
            "a #[task] function cannot be generic: the worker decodes its arguments into concrete types",
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.error(unsafety, "a #[task] function cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.error(abi, "a #[task] function cannot have an `extern` ABI");
    }
    if let Some(variadic) = &sig.variadic {
        errors.error(variadic, "a #[task] function cannot be variadic");
    }
}

fn analyze_param(input: &FnArg, index: usize, errors: &mut Errors) -> Option<Param> {
    let typed = match input {
        FnArg::Receiver(receiver) => {
            errors.error(
                receiver,
                "a #[task] function cannot take `self`: write a free function; \
                 `#[task]` turns it into a unit struct that implements `queue::Task`",
            );
            return None;
        }
        FnArg::Typed(typed) => typed,
    };
    let ident = match &*typed.pat {
        Pat::Ident(binding) if binding.by_ref.is_none() && binding.subpat.is_none() => {
            binding.ident.clone()
        }
        other => {
            errors.error(
                other,
                "task parameters must be plain identifiers such as `order_id: i64`: \
                 the identifier is the argument's keyword name; destructure inside the function",
            );
            return None;
        }
    };
    let ty = (*typed.ty).clone();
    let kind = match context_param(&ty) {
        Some(Ok(by_ref)) => ParamKind::Context { by_ref },
        Some(Err(message)) => {
            errors.error(&ty, message);
            return None;
        }
        None => {
            if let Err(message) = check_argument_type(&ty) {
                errors.error(&ty, message);
                return None;
            }
            ParamKind::Argument {
                index,
                name: ident.unraw().to_string(),
            }
        }
    };
    Some(Param { ident, ty, kind })
}

/// Looks through the invisible groups and parentheses that `macro_rules!` leave around types.
fn peel(ty: &Type) -> &Type {
    match ty {
        Type::Group(group) => peel(&group.elem),
        Type::Paren(paren) => peel(&paren.elem),
        other => other,
    }
}

/// Whether `ty` is a path whose last segment is `name` (with no generic arguments).
fn is_named(ty: &Type, name: &str) -> bool {
    match peel(ty) {
        Type::Path(TypePath { path, qself: None }) => path
            .segments
            .last()
            .is_some_and(|last| last.ident == name && last.arguments.is_none()),
        _ => false,
    }
}

/// `Some(Ok(by_ref))` for `TaskContext` / `&TaskContext`, `Some(Err)` for `&mut TaskContext`,
/// `None` for any other type.
fn context_param(ty: &Type) -> Option<Result<bool, &'static str>> {
    match peel(ty) {
        Type::Reference(TypeReference {
            mutability, elem, ..
        }) if is_named(elem, "TaskContext") => Some(match mutability {
            None => Ok(true),
            Some(_) => Err(
                "the task context is shared: take `&TaskContext` or `TaskContext`, not `&mut TaskContext`",
            ),
        }),
        other if is_named(other, "TaskContext") => Some(Ok(false)),
        _ => None,
    }
}

/// Arguments arrive by value from a message: no borrows, no `impl Trait`.
fn check_argument_type(ty: &Type) -> Result<(), String> {
    match peel(ty) {
        Type::Reference(reference) => {
            let elem = peel(&reference.elem);
            let advice = if is_named(elem, "str") {
                "use String instead of &str".to_owned()
            } else if let Type::Slice(slice) = elem {
                let item = slice.elem.to_token_stream().to_string();
                format!("use Vec<{item}> instead of &[{item}]")
            } else {
                let owned = elem.to_token_stream().to_string();
                format!("use `{owned}` instead of `&{owned}`")
            };
            Err(format!("task parameters are sent by value: {advice}"))
        }
        Type::ImplTrait(_) => Err(
            "task parameters need a concrete type: they are decoded from the message".to_owned(),
        ),
        _ => Ok(()),
    }
}

fn analyze_output(output: &ReturnType, errors: &mut Errors) -> Output {
    let ty = match output {
        ReturnType::Default => return Output::Unit,
        ReturnType::Type(_, ty) => ty,
    };
    match peel(ty) {
        Type::Tuple(tuple) if tuple.elems.is_empty() => Output::Unit,
        Type::ImplTrait(_) => {
            errors.error(
                ty,
                "a #[task] function must name its return type (not `impl Trait`): \
                 it is the type of the task's result",
            );
            Output::Unit
        }
        Type::Path(TypePath { path, qself: None })
            if path
                .segments
                .last()
                .is_some_and(|last| last.ident == "Result") =>
        {
            let last = path.segments.last().expect("checked above");
            let types: Vec<&Type> = match &last.arguments {
                PathArguments::AngleBracketed(arguments) => arguments
                    .args
                    .iter()
                    .filter_map(|argument| match argument {
                        GenericArgument::Type(ty) => Some(ty),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            match types.as_slice() {
                [ok] => Output::Result {
                    ok: Box::new((*ok).clone()),
                    error: None,
                },
                [ok, error, ..] => Output::Result {
                    ok: Box::new((*ok).clone()),
                    error: Some(Box::new((*error).clone())),
                },
                [] => {
                    errors.error(
                        ty,
                        "write the success type of the task's `Result`, e.g. `Result<T, E>`: \
                         it is the type of the task's result",
                    );
                    Output::Unit
                }
            }
        }
        _ => Output::Value(ty.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyze_str(text: &str) -> syn::Result<TaskFn> {
        analyze(syn::parse_str(text).expect("a function"))
    }

    #[test]
    fn context_parameters_are_not_arguments() {
        let task = analyze_str(
            "fn f(a: i64, context: &queue::TaskContext, mut b: String, owned: TaskContext) {}",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(task.argument_count, 2);
        let kinds: Vec<String> = task
            .params
            .iter()
            .map(|param| match &param.kind {
                ParamKind::Argument { index, name } => format!("{name}@{index}"),
                ParamKind::Context { by_ref } => format!("context(by_ref={by_ref})"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "a@0",
                "context(by_ref=true)",
                "b@1",
                "context(by_ref=false)"
            ]
        );
        assert!(matches!(task.output, Output::Unit));
    }

    #[test]
    fn outputs_are_classified() {
        let success = |text: &str| {
            let task = analyze_str(text).unwrap_or_else(|error| panic!("{error}"));
            let result = matches!(task.output, Output::Result { .. });
            (task.output.success_type().to_string(), result)
        };
        assert_eq!(success("fn f() -> () {}"), ("()".to_owned(), false));
        assert_eq!(
            success("fn f() -> Vec<u8> {}"),
            ("Vec < u8 >".to_owned(), false)
        );
        assert_eq!(
            success("fn f() -> Result<u8, TaskError> {}"),
            ("u8".to_owned(), true)
        );
        assert_eq!(
            success("async fn f() -> std::io::Result<String> {}"),
            ("String".to_owned(), true)
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let error = match analyze_str("fn f<T>(&self, (a, b): (T, T), s: &str) -> Result {}") {
            Ok(_) => panic!("should fail"),
            Err(error) => error,
        };
        let messages: Vec<String> = error.into_iter().map(|error| error.to_string()).collect();
        assert_eq!(messages.len(), 5, "{messages:#?}");
        assert!(messages[0].contains("cannot be generic"));
        assert!(messages[1].contains("cannot take `self`"));
        assert!(messages[2].contains("plain identifiers"));
        assert!(messages[3].contains("use String instead of &str"));
        assert!(messages[4].contains("success type"));
    }
}
