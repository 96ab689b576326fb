//! The sync hub: mappings, links, situations and policies, the reconciliation engine and its
//! runs, and the `recon` and `sync` REST endpoints.
//!
//! Owns: mapping parsing and validation ([`mapping`]), IDM's filter scopes and correlation
//! templates ([`scope`]), situation assessment ([`situation`]),
//! links (`link/<linkType>` in the store, [`links`]), run records (`recon/run` in the store,
//! [`run`]), the engine ([`recon`]) and the service behind the endpoints ([`service`],
//! [`handler`]).
//!
//! Must not: touch a mapped resource except through [`crate::crest::Router`] — a source or
//! target may be `managed/*` as well as `external/idm/<name>/…`, and the engine must not know
//! which; call another module's handler directly; run a script anywhere but on the script
//! engine's pool ([`hooks`], `recon::scripted`).
//!
//! Assignments ([`assignments`]): a source's `effectiveAssignments` for the mapping set
//! target attributes; what was applied is kept on the link.
//!
//! Implicit sync ([`implicit`]) pushes managed-object writes through the same one-object
//! path, from a durable queue (`sync/queue` in the store, [`queue`]) whose rows are committed
//! with the writes. It learns of writes through [`crate::events`], never from `managed` or
//! `system` directly.
//!
//! Not yet here: schedules, link qualifiers other
//! than `default`, link clean-up of links whose source and target are both gone.

pub mod assignments;
pub mod handler;
pub mod hooks;
pub mod implicit;
pub mod links;
pub mod mapping;
pub mod queue;
pub mod recon;
pub mod run;
pub mod scope;
pub mod service;
pub mod situation;

pub use handler::{DeadLetterHandler, ReconHandler, SyncHandler};
pub use mapping::{Mapping, Mappings};
pub use service::SyncService;
pub use situation::{Action, Situation};
