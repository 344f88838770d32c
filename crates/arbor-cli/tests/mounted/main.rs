//! Integration tests that mount real images with `arbor mount` and drive them with
//! ordinary system calls and tools. They need root and /dev/fuse (CI has both).

mod durability;
mod harness;
mod mounting;
mod posix;
mod send;
mod subvolumes;
