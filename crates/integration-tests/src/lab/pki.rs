//! Certificates for the lab's Kubernetes control planes, as kubeadm would create them: one CA,
//! an API server serving certificate per cluster, client certificates for the admin (what the
//! generated kubeconfigs hold), the controller manager and the scheduler, and the key pair
//! service-account tokens are signed with. This is the clusters' own PKI, unrelated to the mesh
//! CA that cmesh manages.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Pair {
    /// Certificate.
    pub cert: String,
    /// Private key (PKCS#8).
    pub key: String,
}

/// The lab's control-plane CA.
pub struct LabCa {
    /// The CA certificate and key.
    pub pair: Pair,
    issuer: Issuer<'static, KeyPair>,
}

fn validity(p: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(2);
}

impl LabCa {
    /// A fresh CA.
    ///
    /// # Panics
    /// Never for valid parameters.
    pub fn new(name: &str) -> LabCa {
        let key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name} kubernetes CA"));
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        validity(&mut p);
        let cert = p.self_signed(&key).expect("CA certificate");
        let pair = Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        };
        LabCa {
            pair,
            issuer: Issuer::new(p, key),
        }
    }

    /// Issues a leaf: `cn`, organizations `orgs` (Kubernetes groups), subject alternative names
    /// `sans` (IP addresses or DNS names), for serving and/or client authentication.
    ///
    /// # Panics
    /// On an invalid name.
    pub fn issue(&self, cn: &str, orgs: &[&str], sans: &[String], server: bool) -> Pair {
        let key = KeyPair::generate().expect("leaf key");
        let mut p = CertificateParams::new(sans.to_vec()).expect("SANs");
        let mut dn = DistinguishedName::new();
        for o in orgs {
            dn.push(DnType::OrganizationName, *o);
        }
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = if server {
            vec![ExtendedKeyUsagePurpose::ServerAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        validity(&mut p);
        let cert = p.signed_by(&key, &self.issuer).expect("leaf certificate");
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// The key pair service-account tokens are signed with: (private PKCS#8 PEM, public SPKI PEM).
///
/// # Panics
/// Never.
pub fn service_account_keys() -> (String, String) {
    let key = KeyPair::generate().expect("service account key");
    (key.serialize_pem(), key.public_key_pem())
}
