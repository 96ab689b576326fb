//! The scheduler: `conf/schedule-<name>.json` jobs (IDM's format) fired from a background
//! loop, and the `/openidm/scheduler/job` REST endpoints.
//!
//! Owns: schedule parsing and validation and next-fire computation ([`job`]), run state and
//! the loop ([`service`]), the REST handler ([`handler`]).
//!
//! Must not: call another module's handler directly. A reconciliation is started through
//! [`crate::sync::SyncService::start`].
//!
//! Script jobs and task scans (IDM's `taskscanner`): their config ([`taskscan`]), the
//! scanner ([`scanner`]) and `/openidm/taskscanner` ([`scan_handler`]).
//!
//! Persisted schedules fire once per trigger across the nodes sharing the store (see
//! [`service`]). Not yet here: workflow invocations, Quartz `L`/`W`/`#` (refused with a
//! message), time zones other than UTC, triggers acquired ahead of their time (they are
//! claimed at it, so `acquiredTriggers` is always empty).

pub mod handler;
pub mod job;
pub mod scan_handler;
pub mod scanner;
pub mod service;
pub mod taskscan;

pub use handler::{SchedulerHandler, TriggerHandler};
pub use job::{parse_job, schedule_name, Job, Schedules};
pub use scan_handler::TaskScannerHandler;
pub use scanner::TaskScanner;
pub use service::Scheduler;
