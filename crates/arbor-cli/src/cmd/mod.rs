//! One module per subcommand, each with its clap `Args` and a `run` function.

pub mod check;
pub mod demo;
pub mod diff;
pub mod mkfs;
pub mod mount;
pub mod receive;
pub mod receive_plain;
pub mod send;
pub mod subvolume;
pub mod sync;
pub mod umount;
