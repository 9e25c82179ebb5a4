//! FAT access for the grubenv refresh: the shared `icos-fat` crate.

pub use icos_fat::{FatError, FatFile, find_root_file, overwrite_file, read_file};
