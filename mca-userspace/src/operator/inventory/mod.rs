//! Clusters from SIG-Multicluster's inventory: `ClusterProfile`s ([`profile`]) turned into
//! members of the published configuration, with credentials from the access providers of
//! the consumer's provider file ([`provider`]), obtained by running their exec plugins
//! ([`exec`]) in the operator and never in the sidecars.

pub mod exec;
pub mod members;
pub mod profile;
pub mod provider;
