//! `#[task]`, the attribute that declares a task of the `queue` task system.
//!
//! It turns a function (`fn` or `async fn`) into a unit struct of the same name that
//! implements `queue::Task`, with an inherent API to call it directly (`add::call`), build a
//! typed call to send (`add::new`), read a typed result (`add::result`) and know its name
//! (`add::name`). Use it through the `queue` facade: `#[queue::task(...)]`.
//!
//! Modules: [`options`] parses and validates `#[task(...)]`, [`analysis`] checks the function's
//! signature, [`codegen`] writes the code.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{ToTokens, quote};
use syn::Item;

mod analysis;
mod codegen;
mod options;

/// Declares a task: turns a function into a unit struct of the same name that implements
/// `queue::Task`.
///
/// ```text
/// use queue::{TaskContext, TaskError, task};
///
/// /// Adds two numbers (this comment documents the generated struct).
/// #[task(name = "tasks.add", queue = "math")]
/// fn add(x: i64, y: i64) -> i64 {        // sync: runs on the blocking thread pool
///     x + y
/// }
///
/// #[task(max_retries = 5, retry_backoff = true, retry_on = ChargeError::is_transient)]
/// async fn charge(context: &TaskContext, order_id: i64) -> Result<Receipt, ChargeError> {
///     // `context` is not an argument: it receives the running task's context.
/// }
///
/// let app = App::builder().task(add).task(charge).build().await?;
/// let result = add::new(1, 2).priority(9).send(&app).await?;   // AsyncResult<i64>
/// assert_eq!(add::call(1, 2), 3);                              // direct call, no queue
/// let same = add::result(&app, result.id());                   // AsyncResult<i64> by id
/// assert_eq!(add::name(), "tasks.add");
/// ```
///
/// # Generated API
///
/// For `fn add(x: i64, y: i64) -> R` (with the function's visibility):
///
/// - `struct add;` (`Clone`, `Copy`, `Debug`, `Default`), implementing `queue::Task`, so that
///   `App::builder().task(add)` registers it;
/// - `add::call(x, y) -> R`: the original function (`async` if it was);
/// - `add::name() -> &'static str`: the task name;
/// - `add::new(x, y) -> queue::TypedSignature<T>`: a call to send, arguments positional;
///   context parameters are left out;
/// - `add::result(&app, id) -> queue::AsyncResult<T>`: a typed handle on a result by id;
///
/// where `T` is `R`, or the success type when `R` is `Result<T, E>`.
///
/// # Parameters and return type
///
/// - Parameters are plain identifiers with owned types implementing `Serialize` and
///   `DeserializeOwned`. A message's arguments fill them positionally, then by name (the
///   identifier); an `Option` parameter may be left out. Mismatches fail the task with
///   `TaskErrorKind::InvalidArguments`.
/// - A parameter of type `TaskContext` or `&TaskContext` receives the task's context and is
///   not an argument.
/// - The return type is `()` (stored as `null`), any `T: Serialize`, or `Result<T, E>` where
///   `E` is `TaskError` or converts into it (any `std::error::Error + Send + Sync + 'static`).
/// - Sync functions run on the blocking thread pool; a panic fails the task with
///   `TaskErrorKind::Panicked` (for async functions too).
/// - The function is no longer a function: call it as `add::call(..)`, also from its own body.
///
/// # Options
///
/// | option | value | default |
/// |---|---|---|
/// | `name` | string | module path with dots + `.` + function name, e.g. `my_app.tasks.add` |
/// | `queue` | string | the routes', else the app's default queue |
/// | `priority` | integer 0–9 | none |
/// | `max_retries` | integer, or `None` for no limit | 3 |
/// | `retry_delay` | seconds (integer or float) | 180 |
/// | `retry_backoff` | bool: delay × 2^retries | false |
/// | `retry_backoff_max` | seconds | 600 |
/// | `retry_jitter` | bool | false |
/// | `retry_on` | path to `fn(&E) -> bool`: errors it accepts are retried | none |
/// | `acks_late` | bool | true |
/// | `ignore_result` | bool | false |
/// | `time_limit` | seconds: hard limit | none |
/// | `soft_time_limit` | seconds: the context's cancellation fires | none |
/// | `rate_limit` | `"N/s"`, `"N/m"` or `"N/h"` | none |
/// | `track_started` | bool | false |
///
/// Values are checked at compile time. Generated code refers to the facade as `::queue`.
#[proc_macro_attribute]
pub fn task(attribute: TokenStream, item: TokenStream) -> TokenStream {
    expand(attribute.into(), item.into()).into()
}

fn expand(attribute: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let function = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(function)) => function,
        Ok(other) => {
            let message = "#[task] applies to functions: `fn` or `async fn`";
            // Point at `struct Name` rather than at the whole item.
            let head = match &other {
                Item::Struct(item) => header(&item.struct_token, &item.ident),
                Item::Enum(item) => header(&item.enum_token, &item.ident),
                Item::Union(item) => header(&item.union_token, &item.ident),
                Item::Trait(item) => header(&item.trait_token, &item.ident),
                Item::Const(item) => header(&item.const_token, &item.ident),
                Item::Static(item) => header(&item.static_token, &item.ident),
                Item::Type(item) => header(&item.type_token, &item.ident),
                Item::Mod(item) => header(&item.mod_token, &item.ident),
                _ => other.to_token_stream(),
            };
            let error = syn::Error::new_spanned(head, message);
            return with_item(error, item);
        }
        Err(error) => return with_item(error, item),
    };
    let options = syn::parse2::<options::TaskOptions>(attribute);
    let has_receiver = function.sig.receiver().is_some();
    let analysis = analysis::analyze(function.clone());
    let (options, task) = match (options, analysis) {
        (Ok(options), Ok(task)) => (options, task),
        (options, analysis) => {
            let mut errors = analysis::Errors::default();
            for error in [options.err(), analysis.err()].into_iter().flatten() {
                errors.push(error);
            }
            let error = errors.into_result().expect_err("one of them failed");
            // Keep the function (so that its body is still checked and IDEs still see it),
            // unless it takes `self`, which a free function cannot.
            return if has_receiver {
                error.to_compile_error()
            } else {
                with_item(error, function.into_token_stream())
            };
        }
    };
    if let (Some(retry_on), analysis::Output::Unit | analysis::Output::Value(_)) =
        (&options.retry_on, &task.output)
    {
        let error = syn::Error::new(
            retry_on.key_span,
            "`retry_on` needs a task that returns `Result<T, E>`: the predicate is called \
             with the error `&E` to decide whether to retry",
        );
        return with_item(error, task.item.into_token_stream());
    }
    codegen::expand(&task, &options)
}

fn header(keyword: &impl ToTokens, ident: &syn::Ident) -> TokenStream2 {
    quote!(#keyword #ident)
}

fn with_item(error: syn::Error, item: TokenStream2) -> TokenStream2 {
    let error = error.to_compile_error();
    quote!(#error #item)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(attribute: &str, item: &str) -> String {
        let attribute: TokenStream2 = attribute.parse().expect("tokens");
        let item: TokenStream2 = item.parse().expect("tokens");
        expand(attribute, item).to_string()
    }

    #[test]
    fn expands_to_a_struct_and_two_impls() {
        let output = expand_str(
            "name = \"tasks.add\"",
            "/// Adds.\npub fn add(x: i64, y: i64) -> i64 { x + y }",
        );
        let file: syn::File = syn::parse_str(&output).expect("valid Rust");
        let kinds: Vec<&str> = file
            .items
            .iter()
            .map(|item| match item {
                Item::Struct(_) => "struct",
                Item::Impl(item) if item.trait_.is_some() => "impl Task",
                Item::Impl(_) => "impl",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["struct", "impl", "impl Task"]);
        assert!(output.contains("run_blocking"));
        assert!(!output.contains("queue_core"));
    }

    #[test]
    fn errors_keep_the_function_unless_it_takes_self() {
        let output = expand_str("colour = 1", "fn paint() {}");
        assert!(output.contains("compile_error"));
        assert!(output.contains("fn paint"));
        let output = expand_str("", "fn method(&self) {}");
        assert!(output.contains("compile_error"));
        assert!(!output.contains("fn method"));
        let output = expand_str("retry_on = f", "fn plain() -> i64 { 1 }");
        assert!(output.contains("needs a task that returns"));
    }
}
