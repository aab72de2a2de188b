use queue::task;

#[task]
fn greet(name: &str) -> String {
    format!("hello {name}")
}

#[task]
fn total(amounts: &[u64]) -> u64 {
    amounts.iter().sum()
}

fn main() {}
