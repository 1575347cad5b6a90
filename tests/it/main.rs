//! The one integration-test binary: each module covers one concern.

mod bad_input;
mod cagnet;
mod calibration;
mod cli;
mod cluster;
mod collectives;
mod cores;
mod cuda;
mod exec;
mod gnn;
mod hybrid;
mod launch;
mod mpi;
mod ogb;
mod one_pass;
mod oracles;
mod outputs;
mod plan;
mod plots;
mod proptest_cmd;
mod scenarios;
mod schedules;
mod support;
mod sweep;
mod tidy;
mod torch_orders;
