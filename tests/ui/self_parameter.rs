use queue::task;

#[task]
fn method(&self, x: i64) -> i64 {
    x
}

fn main() {}
