//! The `batch` group: Jobs and the CronJobs that template them.

pub mod cronjob;
pub mod job;
