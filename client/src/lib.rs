//! The client of the image cloud: the cloud link, the data folder, and the prompt commands.

pub mod cloud;
pub mod commands;
pub mod engine;
pub mod launch;
pub mod notice;
pub mod operator;
pub mod partials;
pub mod peer;
pub mod progress;
pub mod rundir;
pub mod sharing;
pub mod status;
pub mod store;
pub mod transfer_bench;
pub mod transfer_lab;
pub mod usage;
pub mod viewing;
pub mod watch;
pub mod web;
