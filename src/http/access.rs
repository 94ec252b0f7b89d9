//! Who may use the exporter's two listeners, read from the live config at every
//! request (so a reload applies at once): `metrics_token` and `metrics_basic_auth`
//! on the metrics endpoint, `api_token` and `api_basic_auth` on the management API.
//! The probes on the metrics port need none; they reveal no readings.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::{Guarded, allowed, challenge};
use super::error::ApiError;
use crate::config::{BasicCredentials, Config, Secret};
use crate::state::AppState;

/// Which of the exporter's listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Metrics,
    Api,
}

/// The credentials of one listener, as a [`Guarded`] policy.
#[derive(Debug)]
pub struct Access {
    state: Arc<AppState>,
    listener: Listener,
}

impl Access {
    pub fn new(state: Arc<AppState>, listener: Listener) -> Arc<Self> {
        Arc::new(Access { state, listener })
    }

    fn credentials<'a>(
        &self,
        config: &'a Config,
    ) -> (Option<&'a Secret>, Option<&'a BasicCredentials>) {
        match self.listener {
            Listener::Metrics => (
                config.metrics_token.as_ref(),
                config.metrics_basic_auth.as_ref(),
            ),
            Listener::Api => (config.api_token.as_ref(), config.api_basic_auth.as_ref()),
        }
    }
}

impl Guarded for Access {
    fn allows(&self, headers: &HeaderMap) -> bool {
        let config = self.state.store.live();
        let (token, basic) = self.credentials(&config);
        allowed(token, basic, headers)
    }

    fn refuse(&self) -> Response {
        let config = self.state.store.live();
        let (token, basic) = self.credentials(&config);
        let (token_key, basic_key) = match self.listener {
            Listener::Metrics => ("metrics_token", "metrics_basic_auth"),
            Listener::Api => ("api_token", "api_basic_auth"),
        };
        let message = match token {
            Some(_) => format!("Unauthorized: send Authorization: Bearer <{token_key}>"),
            None => format!("Unauthorized: send the {basic_key} user and password"),
        };
        match self.listener {
            Listener::Api => ApiError::new(StatusCode::UNAUTHORIZED, message)
                .header(header::WWW_AUTHENTICATE, challenge(basic))
                .into_response(),
            // The metrics port answers in text, as the rest of its pages.
            Listener::Metrics => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, challenge(basic))],
                format!("{message}\n"),
            )
                .into_response(),
        }
    }
}
