//! Test-only crate: the tuning scripts live beside this file; tests/ runs them against fake /proc and /sys trees.

#![forbid(unsafe_code)]
