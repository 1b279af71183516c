//! The cloud server: election, directory and services as state machines, and the thread
//! shell that drives them with sockets and clocks.

pub mod directory;
pub mod election;
pub mod failure;
pub mod node;
pub mod service;
