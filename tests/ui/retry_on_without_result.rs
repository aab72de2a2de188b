use queue::task;

fn is_transient(_error: &std::io::Error) -> bool {
    true
}

#[task(retry_on = is_transient)]
fn cannot_fail(x: i64) -> i64 {
    x
}

fn main() {}
