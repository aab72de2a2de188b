use queue::task;

#[task(name = "tasks.add")]
struct Add {
    x: i64,
}

fn main() {}
