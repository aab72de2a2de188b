use queue::task;

#[task]
fn point((x, y): (i64, i64)) -> i64 {
    x + y
}

#[task]
fn ignored(_: i64) {}

fn main() {}
