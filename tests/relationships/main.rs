//! IDM's relationship model on a running gateway: relationship properties stored as edges,
//! both sides of reverse relationships, `_fields` forms, sub-collections (seed 002's group
//! routes verbatim), integrity on delete, `validate`, and concurrent writers.

#[path = "../common/mod.rs"]
mod common;
mod helpers;
mod objects;
mod roles;
mod sides;
