//! The scheduler: `conf/schedule-<name>.json` jobs (IDM's format) fired from a background
//! loop, and the `/openidm/scheduler/job` REST endpoints.
//!
//! Owns: schedule parsing and validation and next-fire computation ([`job`]), run state and
//! the loop ([`service`]), the REST handler ([`handler`]).
//!
//! Must not: call another module's handler directly. A reconciliation is started through
//! [`crate::sync::SyncService::start`].
//!
//! Not yet here: persisted (clustered) schedules, `invokeService` other than sync, script
//! invocations, Quartz `L`/`W`/`#`, time zones other than UTC.

pub mod handler;
pub mod job;
pub mod service;

pub use handler::SchedulerHandler;
pub use job::{parse_job, schedule_name, Job, Schedules};
pub use service::Scheduler;
