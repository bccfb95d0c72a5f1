//! The registry clients of one job (one signal, or one image's turn in a `reconcile`): one client
//! per registry host, whose single token covers every repository the job touches there, so a
//! promotion costs one token handshake per registry (a fresh token per job: docs/configuration.md).

use crate::registry::auth::IdentityChoice;
use crate::registry::{RegistryClient, RegistryError, RegistryHost, Repository, Transport};

/// How a job uses a repository, as token scope actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// Write and delete (promoter's own indexes, whose obsolete entries it deletes).
    Own,
}

impl Access {
    fn actions(self) -> &'static str {
        match self {
            Access::Read => "pull",
            Access::Write => "pull,push",
            Access::Own => "pull,push,delete",
        }
    }
}

pub struct Job {
    clients: Vec<(RegistryHost, RegistryClient)>,
}

impl Job {
    /// Clients for `repositories`, with the identity's credential for each host asked now.
    pub async fn new(
        transport: &Transport,
        identity: &IdentityChoice,
        repositories: &[(Repository, Access)],
    ) -> Result<Job, RegistryError> {
        let mut hosts: Vec<&RegistryHost> = repositories.iter().map(|(r, _)| &r.registry).collect();
        hosts.sort_by_key(|h| h.as_str());
        hosts.dedup();
        let clients = futures::future::try_join_all(hosts.into_iter().map(|host| async move {
            let scopes: Vec<(&Repository, &str)> = repositories
                .iter()
                .filter(|(r, _)| &r.registry == host)
                .map(|(r, access)| (r, access.actions()))
                .collect();
            let client = transport.registry_client(identity, host, &scopes).await?;
            Ok::<_, RegistryError>((host.clone(), client))
        }))
        .await?;
        Ok(Job { clients })
    }

    /// The client for `repository`'s registry. Every repository a job touches is on a host it
    /// was built for; one that is not gets the first client's registry named in the error.
    pub fn client(&self, repository: &Repository) -> Result<&RegistryClient, RegistryError> {
        self.clients
            .iter()
            .find(|(host, _)| host == &repository.registry)
            .map(|(_, client)| client)
            .ok_or_else(|| RegistryError::NotFound {
                image: format!("a client for {repository} in this job"),
                registry: repository.registry.to_string(),
            })
    }
}
