use queue::{TaskContext, task};

#[task]
fn exclusive(context: &mut TaskContext) -> String {
    context.id().to_owned()
}

fn main() {}
