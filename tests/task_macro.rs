//! `#[task]` through the facade: options, names, running sync and async tasks, argument
//! matching, the task context, panics, `retry_on`, and the generated API.

use std::time::Duration;

use queue::protocol::Headers;
use queue::{
    App, Arguments, AsyncResult, RateLimit, RetryPolicy, Task, TaskContext, TaskError,
    TaskErrorKind, TaskOptions, TypedSignature, task,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Tasks under test.

/// Adds two numbers.
#[task(name = "tasks.add")]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[task]
fn plain() {}

#[task]
async fn async_add(x: i64, y: i64) -> i64 {
    tokio::task::yield_now().await;
    x + y
}

#[task(
    name = "tasks.everything",
    queue = "math",
    priority = 5,
    max_retries = 7,
    retry_delay = 2,
    retry_backoff = true,
    retry_backoff_max = 600,
    retry_jitter = true,
    retry_on = is_transient,
    acks_late = false,
    ignore_result = true,
    time_limit = 30,
    soft_time_limit = 20.5,
    rate_limit = "10/m",
    track_started = true
)]
fn everything(fail: Option<String>) -> Result<u32, MyError> {
    match fail.as_deref() {
        Some("transient") => Err(MyError::Transient),
        Some(_) => Err(MyError::Fatal("no way".to_owned())),
        None => Ok(1),
    }
}

#[task(max_retries = None, retry_delay = 0.25)]
fn unlimited() {}

#[derive(Debug)]
enum MyError {
    Transient,
    Fatal(String),
}

impl std::fmt::Display for MyError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MyError::Transient => formatter.write_str("try again"),
            MyError::Fatal(why) => write!(formatter, "fatal: {why}"),
        }
    }
}

impl std::error::Error for MyError {}

fn is_transient(error: &MyError) -> bool {
    matches!(error, MyError::Transient)
}

mod tasks {
    use queue::{TaskContext, TaskError, task};

    #[task]
    pub async fn nested() {}

    #[task(retry_on = crate::tasks::always)]
    pub async fn typed_error(fail: bool) -> Result<String, TaskError> {
        if fail {
            Err(TaskError::new("ValueError", "bad value"))
        } else {
            Ok("fine".to_owned())
        }
    }

    pub fn always(_error: &TaskError) -> bool {
        true
    }

    #[task]
    pub(crate) fn context_id(context: &TaskContext, suffix: String) -> String {
        format!("{}{suffix}", context.id())
    }

    #[task]
    pub async fn async_context(
        prefix: String,
        context: TaskContext,
        extra: &TaskContext,
    ) -> String {
        format!("{prefix}{}/{}", context.id(), extra.queue())
    }
}

#[task]
fn optional(required: i64, maybe: Option<i64>) -> i64 {
    required + maybe.unwrap_or(100)
}

#[task]
fn panics(owned: bool) -> i64 {
    if owned {
        panic!("owned message {}", 42);
    }
    panic!("static message");
}

#[task]
async fn async_panics() -> i64 {
    panic!("async boom");
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

#[task]
fn swap(mut point: Point, r#type: String) -> (Point, String) {
    std::mem::swap(&mut point.x, &mut point.y);
    (point, r#type)
}

#[task]
fn io_error(fail: bool) -> std::io::Result<u8> {
    if fail {
        Err(std::io::Error::other("disk on fire"))
    } else {
        Ok(8)
    }
}

/// Parameter names that the generated code must not confuse with its own.
#[task]
fn collide(arguments: i64, context: i64, panic_message: i64, outcome: i64) -> i64 {
    arguments + context + panic_message + outcome
}

#[task]
async fn async_collide(arguments: i64, context: i64, panic_message: i64) -> i64 {
    arguments + context + panic_message
}

// ---------------------------------------------------------------------------------------------
// Helpers.

async fn app() -> App {
    App::builder().build().await.expect("memory app")
}

async fn context(id: &str) -> TaskContext {
    TaskContext::new(
        app().await,
        Headers::new("test", id),
        "celery",
        CancellationToken::new(),
    )
}

fn arguments(args: Value, kwargs: Value) -> Arguments {
    Arguments {
        args: args.as_array().cloned().unwrap_or_default(),
        kwargs: kwargs.as_object().cloned().unwrap_or_default(),
    }
}

async fn run(task: impl Task, args: Value, kwargs: Value) -> Result<Value, TaskError> {
    task.run(context("task-id").await, arguments(args, kwargs))
        .await
}

fn kind(result: Result<Value, TaskError>) -> TaskErrorKind {
    result.expect_err("the run should fail").kind().clone()
}

// ---------------------------------------------------------------------------------------------
// Options and names.

#[test]
fn every_option_maps_to_task_options() {
    let expected = TaskOptions {
        queue: Some("math".to_owned()),
        priority: Some(5),
        retry: RetryPolicy {
            max_retries: Some(7),
            delay: Duration::from_secs(2),
            backoff: true,
            backoff_max: Duration::from_secs(600),
            jitter: true,
        },
        acks_late: false,
        ignore_result: true,
        time_limit: Some(Duration::from_secs(30)),
        soft_time_limit: Some(Duration::from_millis(20_500)),
        rate_limit: Some(RateLimit {
            count: 10,
            period: Duration::from_secs(60),
        }),
        track_started: true,
    };
    assert_eq!(Task::options(&everything), expected);
}

#[test]
fn options_left_out_keep_their_defaults() {
    assert_eq!(Task::options(&add), TaskOptions::default());
    let options = Task::options(&unlimited);
    assert_eq!(options.retry.max_retries, None);
    assert_eq!(options.retry.delay, Duration::from_millis(250));
    assert_eq!(
        options.retry.backoff_max,
        RetryPolicy::default().backoff_max
    );
    assert!(options.acks_late);
}

#[test]
fn names_default_to_the_module_path_and_function_name() {
    assert_eq!(add::name(), "tasks.add");
    assert_eq!(Task::name(&add), "tasks.add");
    assert_eq!(plain::name(), "task_macro.plain");
    assert_eq!(Task::name(&plain), "task_macro.plain");
    assert_eq!(tasks::nested::name(), "task_macro.tasks.nested");
    assert_eq!(
        Task::name(&tasks::context_id),
        "task_macro.tasks.context_id"
    );
    // The name is computed once.
    assert!(std::ptr::eq(plain::name(), plain::name()));
}

#[test]
fn the_struct_is_a_plain_unit_value() {
    let copy = add;
    assert_eq!(format!("{copy:?}"), "add");
    let tasks: Vec<Box<dyn Task>> = vec![Box::new(add), Box::new(async_add), Box::new(plain)];
    assert_eq!(tasks.len(), 3);
}

#[tokio::test]
async fn tasks_register_with_the_app_builder() {
    let app = App::builder()
        .task(add)
        .task(async_add)
        .task(tasks::nested)
        .build()
        .await
        .unwrap();
    assert_eq!(
        app.registry().names(),
        vec![
            "task_macro.async_add",
            "task_macro.tasks.nested",
            "tasks.add"
        ]
    );
    let registered = app.registry().get("tasks.add").unwrap();
    let output = registered
        .task
        .run(context("id").await, arguments(json!([20, 22]), json!({})))
        .await;
    assert_eq!(output, Ok(json!(42)));
}

// ---------------------------------------------------------------------------------------------
// Running.

#[tokio::test]
async fn sync_tasks_run_with_positional_and_keyword_arguments() {
    assert_eq!(run(add, json!([1, 2]), json!({})).await, Ok(json!(3)));
    assert_eq!(
        run(add, json!([]), json!({"x": 1, "y": 5})).await,
        Ok(json!(6))
    );
    assert_eq!(run(add, json!([10]), json!({"y": 5})).await, Ok(json!(15)));
    assert_eq!(run(plain, json!([]), json!({})).await, Ok(Value::Null));
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_tasks_run_on_a_multi_thread_runtime() {
    assert_eq!(run(add, json!([4, 4]), json!({})).await, Ok(json!(8)));
}

#[tokio::test]
async fn async_tasks_run() {
    assert_eq!(run(async_add, json!([1, 2]), json!({})).await, Ok(json!(3)));
    assert_eq!(
        run(async_add, json!([]), json!({"y": 2, "x": 40})).await,
        Ok(json!(42))
    );
    assert_eq!(
        run(tasks::nested, json!([]), json!({})).await,
        Ok(Value::Null)
    );
}

#[tokio::test]
async fn structured_arguments_mut_bindings_and_raw_identifiers() {
    let output = run(swap, json!([{"x": 1, "y": 2}]), json!({"type": "kind"})).await;
    assert_eq!(output, Ok(json!([{"x": 2, "y": 1}, "kind"])));
}

#[tokio::test]
async fn parameter_names_do_not_clash_with_generated_code() {
    assert_eq!(
        run(collide, json!([1, 2, 3, 4]), json!({})).await,
        Ok(json!(10))
    );
    let kwargs = json!({"arguments": 1, "context": 2, "panic_message": 3});
    assert_eq!(run(async_collide, json!([]), kwargs).await, Ok(json!(6)));
}

#[tokio::test]
async fn mismatched_arguments_are_invalid_arguments() {
    let invalid = TaskErrorKind::InvalidArguments;
    // Missing.
    assert_eq!(kind(run(add, json!([1]), json!({})).await), invalid);
    // Extra positional.
    assert_eq!(kind(run(add, json!([1, 2, 3]), json!({})).await), invalid);
    // Unexpected keyword.
    assert_eq!(
        kind(run(add, json!([1, 2]), json!({"z": 3})).await),
        invalid
    );
    // Both positional and by name.
    assert_eq!(
        kind(run(add, json!([1, 2]), json!({"x": 3})).await),
        invalid
    );
    // Wrong type.
    let error = run(add, json!(["one", 2]), json!({})).await.unwrap_err();
    assert_eq!(error.kind(), &invalid);
    assert!(error.message().contains("argument 'x'"), "{error}");
    // Same for async tasks.
    assert_eq!(kind(run(async_add, json!([1]), json!({})).await), invalid);
}

#[tokio::test]
async fn option_parameters_may_be_left_out() {
    assert_eq!(run(optional, json!([1]), json!({})).await, Ok(json!(101)));
    assert_eq!(run(optional, json!([1, 2]), json!({})).await, Ok(json!(3)));
    assert_eq!(
        run(optional, json!([1]), json!({"maybe": 5})).await,
        Ok(json!(6))
    );
    assert_eq!(
        run(optional, json!([1, null]), json!({})).await,
        Ok(json!(101))
    );
}

#[tokio::test]
async fn context_parameters_receive_the_context() {
    let output = tasks::context_id.run(context("abc").await, arguments(json!(["!"]), json!({})));
    assert_eq!(output.await, Ok(json!("abc!")));
    // Context parameters are not arguments: one argument only.
    let output = tasks::context_id.run(context("abc").await, arguments(json!(["!", 1]), json!({})));
    assert_eq!(kind(output.await), TaskErrorKind::InvalidArguments);

    let output = tasks::async_context.run(
        context("xyz").await,
        arguments(json!([]), json!({"prefix": "id="})),
    );
    assert_eq!(output.await, Ok(json!("id=xyz/celery")));
}

#[tokio::test]
async fn panics_in_sync_tasks_become_panicked_errors() {
    let error = run(panics, json!([false]), json!({})).await.unwrap_err();
    assert_eq!(error.kind(), &TaskErrorKind::Panicked);
    assert_eq!(error.message(), "static message");
    let error = run(panics, json!([true]), json!({})).await.unwrap_err();
    assert_eq!(error.kind(), &TaskErrorKind::Panicked);
    assert_eq!(error.message(), "owned message 42");
}

#[tokio::test]
async fn panics_in_async_tasks_become_panicked_errors() {
    let error = run(async_panics, json!([]), json!({})).await.unwrap_err();
    assert_eq!(error.kind(), &TaskErrorKind::Panicked);
    assert_eq!(error.message(), "async boom");
}

#[tokio::test]
async fn retry_on_turns_matching_errors_into_retries() {
    assert_eq!(run(everything, json!([]), json!({})).await, Ok(json!(1)));

    let retry = run(everything, json!(["transient"]), json!({}))
        .await
        .unwrap_err();
    assert!(retry.is_retry(), "{retry:?}");
    assert_eq!(retry.kind(), &TaskErrorKind::Retry { countdown: None });
    assert_eq!(retry.exc_type(), "MyError");
    assert_eq!(retry.message(), "try again");

    let failure = run(everything, json!(["fatal"]), json!({}))
        .await
        .unwrap_err();
    assert_eq!(failure.kind(), &TaskErrorKind::Failed);
    assert_eq!(failure.exc_type(), "MyError");
    assert_eq!(failure.message(), "fatal: no way");
}

#[tokio::test]
async fn result_with_task_error_and_with_std_errors() {
    assert_eq!(
        run(tasks::typed_error, json!([false]), json!({})).await,
        Ok(json!("fine"))
    );
    let error = run(tasks::typed_error, json!([true]), json!({}))
        .await
        .unwrap_err();
    assert!(error.is_retry(), "retry_on = always");
    assert_eq!(error.exc_type(), "ValueError");
    assert_eq!(error.message(), "bad value");

    assert_eq!(run(io_error, json!([false]), json!({})).await, Ok(json!(8)));
    let error = run(io_error, json!([true]), json!({})).await.unwrap_err();
    assert_eq!(error.kind(), &TaskErrorKind::Failed);
    assert_eq!(error.exc_type(), "Error");
    assert_eq!(error.message(), "disk on fire");
}

// ---------------------------------------------------------------------------------------------
// Generated API.

#[tokio::test]
async fn call_runs_the_function_directly() {
    assert_eq!(add::call(1, 2), 3);
    assert_eq!(async_add::call(2, 3).await, 5);
    assert_eq!(optional::call(1, None), 101);
    let context = context("direct").await;
    assert_eq!(tasks::context_id::call(&context, "?".to_owned()), "direct?");
    assert!(matches!(
        everything::call(Some("transient".into())),
        Err(MyError::Transient)
    ));
}

#[test]
fn new_builds_a_typed_signature() {
    let call: TypedSignature<i64> = add::new(1, 2);
    assert_eq!(call.signature().name, "tasks.add");
    assert_eq!(call.signature().args, vec![json!(1), json!(2)]);
    assert!(call.signature().kwargs.is_empty());

    let call = add::new(1, 2).priority(9).queue("fast");
    assert_eq!(call.signature().options.priority, Some(9));
    assert_eq!(call.signature().options.queue.as_deref(), Some("fast"));

    // Context parameters are skipped; the output type is the Result's success type.
    let call: TypedSignature<String> = tasks::context_id::new("!".to_owned());
    assert_eq!(call.signature().name, "task_macro.tasks.context_id");
    assert_eq!(call.signature().args, vec![json!("!")]);
    let _: TypedSignature<u32> = everything::new(None);
    let _: TypedSignature<()> = plain::new();
    let _: TypedSignature<u8> = io_error::new(true);
    let call: TypedSignature<(Point, String)> = swap::new(Point { x: 1, y: 2 }, "t".into());
    assert_eq!(
        call.signature().args,
        vec![json!({"x": 1, "y": 2}), json!("t")]
    );
}

#[tokio::test]
async fn result_is_a_typed_handle() {
    let app = app().await;
    let result: AsyncResult<i64> = add::result(&app, "some-id");
    assert_eq!(result.id(), "some-id");
    let _: AsyncResult<()> = plain::result(&app, String::from("other"));
    let _: AsyncResult<String> = tasks::typed_error::result(&app, "x");
}

#[tokio::test]
async fn new_sends_through_the_app() {
    let app = App::builder().task(add).build().await.unwrap();
    let result: AsyncResult<i64> = add::new(1, 2).send(&app).await.unwrap();
    let length = app.broker().queue_length("celery").await.unwrap();
    assert_eq!(length.total, 1);
    assert!(!result.id().is_empty());
}

#[queue::task(name = "macro.static_text")]
async fn static_text() -> &'static str {
    "borrowed"
}

#[tokio::test]
async fn a_static_str_result_reads_back_as_a_string() {
    let app = queue::App::builder()
        .backend("memory://")
        .task(static_text)
        .build()
        .await
        .unwrap();
    let worker = queue::Worker::new(app.clone()).spawn();
    let text: String = static_text::new()
        .send(&app)
        .await
        .unwrap()
        .get(std::time::Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(text, "borrowed");
    worker.shutdown().await.unwrap();
}
