//! The users endpoints of [`BrokerClient`] (shared/API.md "Security"): users, their
//! permissions and quotas, and their tokens. Every one needs a token with `admin`
//! on `cluster` ([`super::ClientOptions::token`]).
//!
//! Any node takes a user change and applies it to every broker group, so these
//! calls go where writes go and are not resent beyond leader following: a create
//! whose answer was lost may have made the user (a second create then answers
//! `CONFLICT`), and a token is shown only in the answer that made it.

use reqwest::Method;

use super::broker_client::{BrokerClient, Call};
use super::error::Result;
use crate::api::{
    DeletedUserResponse, UserRequest, UserTokenResponse, UserUpdate, UserView, UsersResponse,
};

impl BrokerClient {
    /// `POST /v1/users`: creates a user; answers its token, the only time it is
    /// shown (the broker keeps a hash).
    ///
    /// # Errors
    /// `CONFLICT` when the user exists, `BAD_REQUEST` for a bad name, permission or
    /// quota, `UNAUTHORIZED` / `NO_PERMISSION` without an admin token, transport
    /// failures.
    pub async fn create_user(&self, request: &UserRequest) -> Result<UserTokenResponse> {
        let call = Call::write(Method::POST, &["v1", "users"], Some(request))?;
        self.execute(&call).await?.json()
    }

    /// `GET /v1/users`: every user with its permissions and quotas (never tokens).
    ///
    /// # Errors
    /// `UNAUTHORIZED` / `NO_PERMISSION` without an admin token, transport failures.
    pub async fn users(&self) -> Result<UsersResponse> {
        self.execute(&Call::read(&["v1", "users"])).await?.json()
    }

    /// `GET /v1/users/{name}`
    ///
    /// # Errors
    /// `USER_NOT_FOUND`, `UNAUTHORIZED` / `NO_PERMISSION`, transport failures.
    pub async fn user(&self, name: &str) -> Result<UserView> {
        let segments = ["v1", "users", name];
        self.execute(&Call::read(&segments)).await?.json()
    }

    /// `PUT /v1/users/{name}`: replaces the user's permissions and quotas (both);
    /// answers the user as stored.
    ///
    /// # Errors
    /// `USER_NOT_FOUND`, `BAD_REQUEST`, `UNAUTHORIZED` / `NO_PERMISSION`, transport
    /// failures.
    pub async fn update_user(&self, name: &str, update: &UserUpdate) -> Result<UserView> {
        let segments = ["v1", "users", name];
        let call = Call::write(Method::PUT, &segments, Some(update))?;
        self.execute(&call).await?.json()
    }

    /// `DELETE /v1/users/{name}`: the user's token stops working on every node
    /// within seconds.
    ///
    /// # Errors
    /// `USER_NOT_FOUND`, `UNAUTHORIZED` / `NO_PERMISSION`, transport failures.
    pub async fn delete_user(&self, name: &str) -> Result<DeletedUserResponse> {
        let segments = ["v1", "users", name];
        let call = Call::write(Method::DELETE, &segments, None::<&()>)?;
        self.execute(&call).await?.json()
    }

    /// `POST /v1/users/{name}/token`: a new token for the user (shown only here);
    /// the old one stops working.
    ///
    /// # Errors
    /// `USER_NOT_FOUND`, `UNAUTHORIZED` / `NO_PERMISSION`, transport failures.
    pub async fn rotate_user_token(&self, name: &str) -> Result<UserTokenResponse> {
        let segments = ["v1", "users", name, "token"];
        let call = Call::write(Method::POST, &segments, None::<&()>)?;
        self.execute(&call).await?.json()
    }
}
