//! kwg CLI library.
