//! Who a peer is, from its certificate.
//!
//! In-cluster identities are DNS names in the certificate's subject alternative names: SPU `N`
//! of cluster `C` is `spu-N.C` ([`spu_name`]), the SC is `sc.C` ([`sc_name`]). A client's
//! principal is its certificate's first DNS SAN, or its subject CN when it has none.

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The name SPU `id` of `cluster` has in its certificate: `spu-<id>.<cluster>`.
pub fn spu_name(id: i32, cluster: &str) -> String {
    format!("spu-{id}.{cluster}")
}

/// The name the SC of `cluster` has in its certificate: `sc.<cluster>`.
pub fn sc_name(cluster: &str) -> String {
    format!("sc.{cluster}")
}

/// What a verified peer certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// DNS subject alternative names, in certificate order.
    pub dns_names: Vec<String>,
    /// The subject's common name.
    pub common_name: Option<String>,
}

impl Identity {
    /// Reads the identity of an end-entity certificate; `None` when it does not parse (it was
    /// verified by rustls before, so this does not happen for a peer's certificate).
    pub fn from_certificate(certificate: &CertificateDer<'_>) -> Option<Identity> {
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
        let dns_names = match parsed.subject_alternative_name() {
            Ok(Some(extension)) => extension
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(name) => Some((*name).to_owned()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let common_name = parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|name| name.as_str().ok())
            .map(str::to_owned);
        Some(Identity { dns_names, common_name })
    }

    /// The identity of a connection's peer: its end-entity certificate, if it sent one.
    pub fn of_peer(connection: &rustls::CommonState) -> Option<Identity> {
        connection.peer_certificates()?.first().and_then(Identity::from_certificate)
    }

    /// The principal name of a client: the first DNS SAN, else the subject CN.
    pub fn principal(&self) -> Option<&str> {
        self.dns_names.first().map(String::as_str).or(self.common_name.as_deref())
    }

    /// Whether the certificate names SPU `id` of `cluster`.
    pub fn is_spu(&self, id: i32, cluster: &str) -> bool {
        let name = spu_name(id, cluster);
        self.dns_names.iter().any(|dns| dns.eq_ignore_ascii_case(&name))
    }

    /// Whether the certificate names the SC of `cluster`.
    pub fn is_sc(&self, cluster: &str) -> bool {
        let name = sc_name(cluster);
        self.dns_names.iter().any(|dns| dns.eq_ignore_ascii_case(&name))
    }

    /// The SPU ids of `cluster` that the certificate names (for error messages).
    pub fn spu_ids(&self, cluster: &str) -> Vec<i32> {
        let suffix = format!(".{cluster}");
        self.dns_names
            .iter()
            .filter_map(|dns| dns.strip_suffix(&suffix)?.strip_prefix("spu-")?.parse().ok())
            .collect()
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.principal() {
            Some(principal) => formatter.write_str(principal),
            None => formatter.write_str("<certificate without a name>"),
        }
    }
}
