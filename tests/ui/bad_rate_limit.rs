use queue::task;

#[task(rate_limit = "10/d")]
fn daily() {}

#[task(rate_limit = "ten/s")]
fn wordy() {}

#[task(rate_limit = 10)]
fn bare() {}

fn main() {}
