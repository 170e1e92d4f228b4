//! The membership endpoints of [`BrokerClient`] (shared/API.md "Control plane"): add a
//! node to a broker group, follow its join, remove a node, hand leadership to a
//! voter. Every one needs a token with `admin` on `cluster`
//! ([`super::ClientOptions::token`]).
//!
//! Each runs on the named group's leader, and any node forwards it there (another
//! group's nodes through that group's routes), so these calls go where writes go
//! and are not resent beyond leader following. Adding a node is asynchronous: the
//! answer is the join as started; [`BrokerClient::join`] tells how it goes on.

use reqwest::Method;

use super::broker_client::{BrokerClient, Call};
use super::error::Result;
use crate::api::{
    AddNodeRequest, FinalizeUpgradeResponse, GroupView, JoinView, TransferLeaderRequest,
};

impl BrokerClient {
    /// `POST /v1/cluster/groups/{group}/nodes`: starts adding node `node_id`,
    /// reachable by the group's nodes at `address` (a base URL), as a learner and,
    /// once it has caught up, as a voter. Answers the join as started (HTTP 202); a
    /// repeated add of the same node and address answers the running join, and a
    /// node that is a voter already answers a `DONE` join.
    ///
    /// # Errors
    /// `BROKER_GROUP_NOT_FOUND` for an unknown group, `BAD_REQUEST` for a zero id, a
    /// bad address, an address that is another node of the group or an id that is
    /// a member at another address, `UNAVAILABLE` while too many joins run,
    /// `UNAUTHORIZED` / `NO_PERMISSION` without an admin token, transport failures.
    pub async fn add_node(&self, group: &str, node_id: u64, address: &str) -> Result<JoinView> {
        let segments = ["v1", "cluster", "groups", group, "nodes"];
        let body = AddNodeRequest {
            node_id,
            address: address.to_string(),
        };
        let call = Call::write(Method::POST, &segments, Some(&body))?;
        self.execute(&call).await?.json()
    }

    /// `GET /v1/cluster/groups/{group}/nodes/{node_id}`: the node's join as the
    /// group's leader knows it; without one, what the membership says (a voter is
    /// `DONE`, a learner no join runs for is `FAILED`).
    ///
    /// # Errors
    /// `NOT_FOUND` for a node neither joining nor a member, `BROKER_GROUP_NOT_FOUND`
    /// for an unknown group, `UNAUTHORIZED` / `NO_PERMISSION` without an admin
    /// token, transport failures.
    pub async fn join(&self, group: &str, node_id: u64) -> Result<JoinView> {
        let id = node_id.to_string();
        let segments = ["v1", "cluster", "groups", group, "nodes", &id];
        self.execute(&Call::read(&segments)).await?.json()
    }

    /// `DELETE /v1/cluster/groups/{group}/nodes/{node_id}`: removes a voter or a
    /// learner; answers the group as it is afterwards.
    ///
    /// # Errors
    /// `BROKER_GROUP_NOT_FOUND` for an unknown group, `BAD_REQUEST` for a node that
    /// is not a member or is the last voter, `UNAVAILABLE` when the change cannot be
    /// committed now, `UNAUTHORIZED` / `NO_PERMISSION` without an admin token,
    /// transport failures.
    pub async fn remove_node(&self, group: &str, node_id: u64) -> Result<GroupView> {
        let id = node_id.to_string();
        let segments = ["v1", "cluster", "groups", group, "nodes", &id];
        let call = Call::write(Method::DELETE, &segments, None::<&()>)?;
        self.execute(&call).await?.json()
    }

    /// `POST /v1/cluster/groups/{group}/transfer-leader` `{"to": N}`: hands the
    /// group's leadership to voter `to`; answers the group once `to` leads (the
    /// broker waits a few seconds for that).
    ///
    /// # Errors
    /// `BROKER_GROUP_NOT_FOUND` for an unknown group, `BAD_REQUEST` for a node that
    /// is not a voter, `UNAVAILABLE` when `to` did not take over in time (the group
    /// keeps its leader), `UNAUTHORIZED` / `NO_PERMISSION` without an admin token,
    /// transport failures.
    pub async fn transfer_leader(&self, group: &str, to: u64) -> Result<GroupView> {
        let segments = ["v1", "cluster", "groups", group, "transfer-leader"];
        let body = TransferLeaderRequest { to };
        let call = Call::write(Method::POST, &segments, Some(&body))?;
        self.execute(&call).await?.json()
    }

    /// `POST /v1/cluster/groups/{group}/finalize-upgrade`: after every node of
    /// the group runs a new build, the group starts using what it adds (queue
    /// claims). No node of an older build can join the group afterwards.
    ///
    /// # Errors
    /// `CONFLICT` naming a voter that does not run the new build (yet),
    /// `BROKER_GROUP_NOT_FOUND`, `UNAUTHORIZED` / `NO_PERMISSION` without an admin
    /// token, transport failures.
    pub async fn finalize_upgrade(&self, group: &str) -> Result<FinalizeUpgradeResponse> {
        let segments = ["v1", "cluster", "groups", group, "finalize-upgrade"];
        let call = Call::write(Method::POST, &segments, None::<&()>)?;
        self.execute(&call).await?.json()
    }
}
