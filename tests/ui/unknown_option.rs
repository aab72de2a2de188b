use queue::task;

#[task(queue = "paint", colour = "blue")]
fn paint(wall: u32) -> u32 {
    wall
}

fn main() {}
