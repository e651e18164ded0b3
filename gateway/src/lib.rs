//! kwg gateway library.
