//! Shared code of the image cloud: config, wire protocol, and the socket-free state machines
//! (reliable transfer, steganography, previews) used by both the servers and the clients.

pub mod args;
pub mod auth;
pub mod config;
pub mod crypto;
pub mod frame;
pub mod log;
pub mod names;
pub mod operator;
pub mod pathsim;
pub mod preview;
pub mod protocol;
pub mod requester;
pub mod rights;
pub mod rng;
pub mod simnet;
pub mod stego;
pub mod transfer;
pub mod views;
