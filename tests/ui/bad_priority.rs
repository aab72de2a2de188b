use queue::task;

#[task(priority = "high")]
fn urgent() {}

#[task(priority = 12)]
fn too_urgent() {}

fn main() {}
