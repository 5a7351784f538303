//! Test support of the client's own: an in-process fake cluster ([`fake`]). Tests that run the
//! real servers use `sluice_testkit::process`.

#![allow(dead_code)]

pub mod fake;
