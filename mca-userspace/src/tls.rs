//! MCA's own certificate authority and the serving certificate that applications see.
//!
//! The application verifies MCA with the `ca.crt` of its (fake) ServiceAccount, so MCA must be
//! its own CA. Clients load that file once (client-go, kube-rs, `kubectl proxy`, every
//! controller), so the CA must outlive MCA's process: a restarted MCA with a new CA would fail
//! every request of a running application with "certificate signed by unknown authority".
//! The CA (key included) is therefore kept in `--state-dir` ([`crate::state`]), a volume only
//! MCA's container mounts, and restored at start ([`Authorities::restore`]).
//!
//! CAs rotate with an overlap: at two thirds of its life a successor is made and published
//! in `ca.crt` next to the current one, and only after `--ca-overlap` does MCA serve
//! certificates it signed ([`ServingCert::maintain`]). A CA stays in `ca.crt` until it expires.
//!
//! The serving (leaf) certificate is short-lived and renewed in place by [`ServingCert::renew`]
//! through a [`ResolvesServerCert`] that always hands out the newest one, so renewal needs no
//! restart and connections in flight keep the certificate they started with.

use std::{
    net::IpAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use time::OffsetDateTime;

/// How far back `notBefore` is set, so that a client whose clock is slightly behind MCA's still
/// accepts a certificate minted a moment ago.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// The longest MCA waits between two looks at its CAs.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);

/// Errors while minting certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen refused the parameters or failed to sign.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls could not use the generated key.
    #[error("loading the generated key into rustls: {0}")]
    Key(#[from] rustls::Error),
    /// A `--extra-san` value is neither an IP address nor a DNS name.
    #[error("invalid subject alternative name {0:?}")]
    InvalidSan(String),
    /// A saved CA could not be restored.
    #[error("the saved CA {0:?} is unusable")]
    Saved(String),
}

/// The names and addresses a client may dial to reach the API server; every one of them must be
/// in MCA's serving certificate or the client's hostname verification fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectNames {
    /// DNS names, most specific last.
    pub dns: Vec<String>,
    /// IP addresses.
    pub ips: Vec<IpAddr>,
}

impl SubjectNames {
    /// The standard set: loopback, the `kubernetes` Service names under `cluster_domain`, the
    /// real Service host MCA itself was given (an IP or a name), and any extras.
    pub fn for_cluster(
        cluster_domain: &str,
        service_host: Option<&str>,
        extra: &[String],
    ) -> Result<Self, Error> {
        let mut names = Self {
            dns: [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ]
            .map(String::from)
            .into(),
            ips: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ],
        };
        names.add(&format!("kubernetes.default.svc.{cluster_domain}"))?;
        for name in service_host
            .into_iter()
            .chain(extra.iter().map(String::as_str))
        {
            names.add(name)?;
        }
        Ok(names)
    }

    fn add(&mut self, name: &str) -> Result<(), Error> {
        // `KUBERNETES_SERVICE_HOST` holds a bracket-less IPv6 literal; tolerate brackets anyway.
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            if !self.ips.contains(&ip) {
                self.ips.push(ip);
            }
            return Ok(());
        }
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .split('.')
                .all(|label| !label.is_empty() && label.len() <= 63)
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'*');
        if !valid {
            return Err(Error::InvalidSan(name.to_owned()));
        }
        let name = name.to_ascii_lowercase();
        if !self.dns.contains(&name) {
            self.dns.push(name);
        }
        Ok(())
    }

    fn to_san_types(&self) -> Result<Vec<SanType>, Error> {
        let mut sans = Vec::with_capacity(self.dns.len() + self.ips.len());
        for name in &self.dns {
            sans.push(SanType::DnsName(name.as_str().try_into()?));
        }
        sans.extend(self.ips.iter().copied().map(SanType::IpAddress));
        Ok(sans)
    }
}

/// One of MCA's certificate authorities.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    common_name: String,
    not_after: OffsetDateTime,
}

/// A CA as `--state-dir` keeps it.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedAuthority {
    common_name: String,
    certificate: String,
    key: String,
    /// Unix seconds.
    not_after: i64,
    /// From when MCA serves certificates it signed, in Unix seconds.
    serve_from: i64,
}

impl std::fmt::Debug for SavedAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedAuthority")
            .field("common_name", &self.common_name)
            .field("not_after", &self.not_after)
            .field("serve_from", &self.serve_from)
            .finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// Generates a fresh CA (ECDSA P-256) valid for `validity` from `now`, named for the
    /// moment it was made, so that two CAs of one pod are told apart by name too.
    pub fn generate(validity: Duration, now: OffsetDateTime) -> Result<Self, Error> {
        let key = KeyPair::generate()?;
        let common_name = format!("mca-ca-{}", now.unix_timestamp_nanos() / 1_000_000);
        let params = ca_params(&common_name);
        let mut signed = params.clone();
        set_validity(&mut signed, validity, now);
        let cert = signed.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            common_name,
            not_after: signed.not_after,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    fn restore(saved: &SavedAuthority) -> Result<Self, Error> {
        let unusable = || Error::Saved(saved.common_name.clone());
        let key = KeyPair::from_pem(&saved.key).map_err(|_| unusable())?;
        let not_after =
            OffsetDateTime::from_unix_timestamp(saved.not_after).map_err(|_| unusable())?;
        if !saved.certificate.starts_with("-----BEGIN CERTIFICATE-----") {
            return Err(unusable());
        }
        Ok(Self {
            issuer: Issuer::new(ca_params(&saved.common_name), key),
            cert_pem: saved.certificate.clone(),
            common_name: saved.common_name.clone(),
            not_after,
        })
    }

    fn save(&self, serve_from: OffsetDateTime) -> SavedAuthority {
        SavedAuthority {
            common_name: self.common_name.clone(),
            certificate: self.cert_pem.clone(),
            key: self.issuer.key().serialize_pem(),
            not_after: self.not_after.unix_timestamp(),
            serve_from: serve_from.unix_timestamp(),
        }
    }

    /// Mints a serving certificate for `names`, valid for `validity` from now (and never
    /// past the CA's own end).
    fn issue(&self, names: &SubjectNames, validity: Duration) -> Result<Leaf, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name("mca");
        params.subject_alt_names = names.to_san_types()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity, OffsetDateTime::now_utc());
        params.not_after = params.not_after.min(self.not_after);
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der)?;
        let key = CertifiedKey::new(vec![CertificateDer::from(cert.der().to_vec())], signing_key);
        Ok(Leaf {
            key: Arc::new(key),
            not_after: params.not_after,
            issuer: self.common_name.clone(),
        })
    }
}

/// What a CA is made from besides its key: the same for a CA made now and one restored, so
/// certificates a restored CA signs name it exactly as the saved certificate does.
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// How MCA's CAs live and rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaPolicy {
    /// A CA's lifetime; its successor is made after two thirds of it.
    pub validity: Duration,
    /// How long a successor is published in `ca.crt` before MCA serves with it.
    pub overlap: Duration,
}

/// MCA's CAs, oldest first: each with the moment MCA starts serving certificates it signed.
pub struct Authorities {
    all: Vec<(CertAuthority, OffsetDateTime)>,
}

impl Authorities {
    /// One fresh CA, served at once.
    pub fn generate(policy: CaPolicy) -> Result<Self, Error> {
        let now = OffsetDateTime::now_utc();
        let first = CertAuthority::generate(policy.validity, now)?;
        Ok(Self {
            all: vec![(first, now - CLOCK_SKEW)],
        })
    }

    /// The CAs a previous run saved.
    pub fn restore(saved: &[SavedAuthority]) -> Result<Self, Error> {
        let all = saved
            .iter()
            .map(|saved| {
                let serve_from = OffsetDateTime::from_unix_timestamp(saved.serve_from)
                    .map_err(|_| Error::Saved(saved.common_name.clone()))?;
                Ok((CertAuthority::restore(saved)?, serve_from))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        if all.is_empty() {
            return Err(Error::Saved("(none)".to_owned()));
        }
        Ok(Self { all })
    }

    /// What `--state-dir` keeps of them.
    pub fn save(&self) -> Vec<SavedAuthority> {
        self.all.iter().map(|(ca, from)| ca.save(*from)).collect()
    }

    /// The CA that signs serving certificates now: the newest one whose time has come.
    fn serving(&self, now: OffsetDateTime) -> &CertAuthority {
        self.all
            .iter()
            .rev()
            .find(|(_, from)| *from <= now)
            .or(self.all.first())
            .map(|(ca, _)| ca)
            .expect("there is always a CA")
    }

    /// Every CA's certificate, as `ca.crt` holds them.
    fn bundle(&self) -> String {
        self.all.iter().map(|(ca, _)| ca.cert_pem()).collect()
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "mca");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Valid for `validity` from `now`, and a little before it (see [`CLOCK_SKEW`]).
fn set_validity(params: &mut CertificateParams, validity: Duration, now: OffsetDateTime) {
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + validity;
}

/// The current serving certificate, swapped in place on renewal, and the CAs behind it.
pub struct ServingCert {
    authorities: RwLock<Authorities>,
    policy: CaPolicy,
    names: SubjectNames,
    validity: Duration,
    current: RwLock<Leaf>,
}

/// A serving certificate with its key, when it expires, and which CA signed it.
#[derive(Clone)]
struct Leaf {
    key: Arc<CertifiedKey>,
    not_after: OffsetDateTime,
    issuer: String,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("names", &self.names)
            .field("validity", &self.validity)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// What [`ServingCert::maintain`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintained {
    /// The set of CAs changed (a successor made, an expired CA dropped): save it, and publish
    /// the new `ca.crt`.
    pub authorities: bool,
    /// Serving certificates now come from another CA.
    pub switched: bool,
}

impl ServingCert {
    /// Issues the first serving certificate for `names` from `authorities`.
    pub fn new(
        authorities: Authorities,
        policy: CaPolicy,
        names: SubjectNames,
        validity: Duration,
    ) -> Result<Self, Error> {
        let first = authorities
            .serving(OffsetDateTime::now_utc())
            .issue(&names, validity)?;
        Ok(Self {
            authorities: RwLock::new(authorities),
            policy,
            names,
            validity,
            current: RwLock::new(first),
        })
    }

    fn authorities(&self) -> std::sync::RwLockReadGuard<'_, Authorities> {
        self.authorities.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The CA certificates (PEM, one after the other) that `ca.crt` must hold: every one that
    /// signed, signs or will sign a certificate this hands out.
    pub fn ca_pem(&self) -> String {
        self.authorities().bundle()
    }

    /// What `--state-dir` keeps of the CAs.
    pub fn save_authorities(&self) -> Vec<SavedAuthority> {
        self.authorities().save()
    }

    /// When the certificate new handshakes get expires, in seconds since the Unix epoch.
    pub fn expires(&self) -> i64 {
        self.leaf().not_after.unix_timestamp()
    }

    fn leaf(&self) -> Leaf {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// When to renew: after two thirds of the lifetime, so a failed renewal has time to retry.
    pub fn renew_interval(&self) -> Duration {
        self.validity * 2 / 3
    }

    /// Issues a new leaf from the CA that serves now and makes it the one new handshakes get.
    pub fn renew(&self) -> Result<(), Error> {
        self.renew_at(OffsetDateTime::now_utc())
    }

    fn renew_at(&self, now: OffsetDateTime) -> Result<(), Error> {
        let next = self
            .authorities()
            .serving(now)
            .issue(&self.names, self.validity)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }

    /// Moves the CAs on to `now`: drops the expired ones (never the one serving), makes the
    /// successor of a CA two thirds through its life (served only `overlap` later, so that
    /// `ca.crt` names it first), and reissues the serving certificate when its CA's time is
    /// over.
    pub fn maintain(&self, now: OffsetDateTime) -> Result<Maintained, Error> {
        let mut done = Maintained::default();
        {
            let mut authorities = self.authorities.write().unwrap_or_else(|e| e.into_inner());
            let serving = authorities.serving(now).common_name.clone();
            let before = authorities.all.len();
            authorities
                .all
                .retain(|(ca, _)| ca.not_after > now || ca.common_name == serving);
            done.authorities = authorities.all.len() != before;
            let (newest, from) = authorities.all.last().expect("there is always a CA");
            let pending = *from > now;
            if !pending && newest.not_after - now < self.policy.validity / 3 {
                let next = CertAuthority::generate(self.policy.validity, now)?;
                tracing::info!(
                    ca = next.common_name,
                    served_from_in = ?self.policy.overlap,
                    "made the next CA; it is published in ca.crt before MCA serves with it"
                );
                authorities.all.push((next, now + self.policy.overlap));
                done.authorities = true;
            }
        }
        let serving = self.authorities().serving(now).common_name.clone();
        if self.leaf().issuer != serving {
            self.renew_at(now)?;
            tracing::info!(
                ca = serving,
                "serving certificates now come from the next CA"
            );
            done.switched = true;
        }
        Ok(done)
    }

    /// How long until [`Self::maintain`] has something to do: the next CA's turn, the
    /// newest CA's two-thirds mark, or the oldest's end; at most an hour.
    pub fn next_maintenance(&self, now: OffsetDateTime) -> Duration {
        let authorities = self.authorities();
        let (newest, from) = authorities.all.last().expect("there is always a CA");
        let mut next = newest.not_after - self.policy.validity / 3;
        if *from > now {
            next = *from;
        }
        if authorities.all.len() > 1 {
            next = next.min(authorities.all[0].0.not_after);
        }
        let wait = (next - now).max(time::Duration::ZERO);
        Duration::try_from(wait)
            .unwrap_or(MAINTENANCE_INTERVAL)
            .min(MAINTENANCE_INTERVAL)
    }

    /// Renews forever, every [`Self::renew_interval`], calling `renewed` after each renewal;
    /// retries a failed renewal after a minute.
    pub async fn renew_periodically(self: Arc<Self>, mut renewed: impl FnMut() + Send) {
        let mut wait = self.renew_interval();
        loop {
            tokio::time::sleep(wait).await;
            wait = match self.renew() {
                Ok(()) => {
                    tracing::info!(
                        valid_for = ?self.validity,
                        "renewed the serving certificate"
                    );
                    renewed();
                    self.renew_interval()
                }
                Err(error) => {
                    tracing::error!(%error, "renewing the serving certificate failed; retrying");
                    Duration::from_secs(60).min(self.renew_interval())
                }
            };
        }
    }

    /// A rustls server configuration that serves the current certificate and offers HTTP/2 and
    /// HTTP/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> ServerConfig {
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(self))));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

#[derive(Debug)]
struct Resolver(Arc<ServingCert>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.leaf().key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_the_service_and_dedupe() {
        let names = SubjectNames::for_cluster(
            "cluster.local",
            Some("10.96.0.1"),
            &[
                "api.example.com".into(),
                "127.0.0.1".into(),
                "fd00::1".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            names.dns,
            [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "api.example.com"
            ]
        );
        assert_eq!(
            names.ips,
            ["127.0.0.1", "::1", "10.96.0.1", "fd00::1"].map(|s| s.parse::<IpAddr>().unwrap())
        );
    }

    #[test]
    fn bad_san_is_rejected() {
        for bad in ["", "a..b", "spaces are bad", "x/y"] {
            assert!(
                SubjectNames::for_cluster("cluster.local", None, &[bad.into()]).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn renewal_swaps_the_leaf() {
        let names = SubjectNames::for_cluster("cluster.local", None, &[]).unwrap();
        let cert = Arc::new(
            ServingCert::new(
                Authorities::generate(POLICY).unwrap(),
                POLICY,
                names,
                Duration::from_secs(60),
            )
            .unwrap(),
        );
        let before = cert.leaf().key.cert[0].clone();
        let first_expiry = cert.expires();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!((now + 59..=now + 60).contains(&first_expiry));
        std::thread::sleep(Duration::from_millis(1100));
        cert.renew().unwrap();
        assert!(cert.expires() > first_expiry);
        let after = cert.leaf().key.cert[0].clone();
        assert_ne!(before, after);
        assert_eq!(cert.renew_interval(), Duration::from_secs(40));
    }

    const POLICY: CaPolicy = CaPolicy {
        validity: Duration::from_secs(3600),
        overlap: Duration::from_secs(600),
    };

    /// Whether `roots` (PEM) verify the leaf served now, as a client would.
    fn verifies(roots: &str, cert: &ServingCert) -> bool {
        use rustls::client::danger::ServerCertVerifier as _;
        let mut store = rustls::RootCertStore::empty();
        for root in rustls_pemfile_certs(roots) {
            store.add(root).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(store))
            .build()
            .unwrap();
        let leaf = cert.leaf().key.cert[0].clone();
        let name = rustls::pki_types::ServerName::try_from("kubernetes.default.svc").unwrap();
        let now = rustls::pki_types::UnixTime::now();
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], now)
            .is_ok()
    }

    fn rustls_pemfile_certs(pem: &str) -> Vec<CertificateDer<'static>> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn serving(authorities: Authorities) -> ServingCert {
        let names = SubjectNames::for_cluster("cluster.local", None, &[]).unwrap();
        ServingCert::new(authorities, POLICY, names, Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn a_restored_ca_signs_what_its_saved_certificate_verifies() {
        let first = serving(Authorities::generate(POLICY).unwrap());
        let ca_crt = first.ca_pem();
        // As after a restart: the CA from the saved state, a new serving certificate.
        let saved = serde_json::to_string(&first.save_authorities()).unwrap();
        let restored: Vec<SavedAuthority> = serde_json::from_str(&saved).unwrap();
        let second = serving(Authorities::restore(&restored).unwrap());
        assert_eq!(second.ca_pem(), ca_crt);
        assert_ne!(second.leaf().key.cert[0], first.leaf().key.cert[0]);
        assert!(
            verifies(&ca_crt, &second),
            "the old ca.crt must verify the new MCA"
        );
        // A CA of another run does not.
        let other = serving(Authorities::generate(POLICY).unwrap());
        assert!(!verifies(&ca_crt, &other));
        // The key never shows in debug output.
        assert!(!format!("{restored:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn a_rotation_publishes_the_next_ca_before_serving_with_it() {
        let cert = serving(Authorities::generate(POLICY).unwrap());
        let start = OffsetDateTime::now_utc();
        let old_bundle = cert.ca_pem();
        // Nothing to do before two thirds of the CA's life.
        assert_eq!(cert.maintain(start).unwrap(), Maintained::default());
        let due = cert.next_maintenance(start);
        assert!(due <= MAINTENANCE_INTERVAL);
        // At two thirds: a successor, published but not serving.
        let two_thirds = start + POLICY.validity * 2 / 3 + Duration::from_secs(1);
        let made = cert.maintain(two_thirds).unwrap();
        assert_eq!((made.authorities, made.switched), (true, false));
        let bundle = cert.ca_pem();
        assert_eq!(rustls_pemfile_certs(&bundle).len(), 2);
        assert!(bundle.starts_with(&old_bundle));
        assert!(
            verifies(&old_bundle, &cert),
            "served from the old CA during the overlap"
        );
        assert_eq!(cert.next_maintenance(two_thirds), POLICY.overlap);
        // After the overlap: served from the successor, which the published bundle verifies
        // and the old one alone would not.
        let after = two_thirds + POLICY.overlap;
        let switched = cert.maintain(after).unwrap();
        assert_eq!((switched.authorities, switched.switched), (false, true));
        assert!(verifies(&bundle, &cert));
        assert!(!verifies(&old_bundle, &cert));
        // Once the old CA expires it leaves ca.crt.
        let dropped = cert
            .maintain(start + POLICY.validity + Duration::from_secs(1))
            .unwrap();
        assert!(dropped.authorities);
        assert_eq!(rustls_pemfile_certs(&cert.ca_pem()).len(), 1);
        assert!(verifies(&cert.ca_pem(), &cert));
    }
}
