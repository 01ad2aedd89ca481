//! Private keys: generation per [`KeyAlgorithm`], and reading keys written by other tools
//! (PKCS#8, PKCS#1 RSA from Helm's `genCA` and openssl, SEC1 EC from certgen) into PKCS#8,
//! the one form the signer accepts.
//!
//! ECDSA keys come from ring (through rcgen); RSA keys from the pure-Rust `rsa` crate, because
//! ring cannot generate RSA keys. Randomness is the operating system's.

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, PublicKeyData, SignatureAlgorithm};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};

use super::PkiError;
use crate::spec::KeyAlgorithm;

/// A private key in PKCS#8 PEM form with the algorithm it signs with.
pub struct PrivateKey {
    pem: String,
    pair: KeyPair,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, not even in debug output.
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm_name())
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Generates a new key.
    ///
    /// # Errors
    /// [`PkiError::Generate`] if the system RNG or the key encoder fails.
    pub fn generate(alg: KeyAlgorithm) -> Result<Self, PkiError> {
        match alg {
            KeyAlgorithm::EcdsaP256 => {
                let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
                Ok(Self {
                    pem: pair.serialize_pem(),
                    pair,
                })
            }
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa4096 => {
                let bits = if alg == KeyAlgorithm::Rsa2048 {
                    2048
                } else {
                    4096
                };
                let key = rsa::PrivateKey::new(&mut getrandom::SysRng, bits).map_err(gen_err)?;
                let pem = key
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(gen_err)?
                    .to_string();
                Self::from_pkcs8_pem(&pem, &PKCS_RSA_SHA256)
            }
        }
    }

    fn from_pkcs8_pem(pem: &str, alg: &'static SignatureAlgorithm) -> Result<Self, PkiError> {
        let pair = KeyPair::from_pem_and_sign_algo(pem, alg).map_err(|e| PkiError::InvalidKey {
            reason: e.to_string(),
        })?;
        Ok(Self {
            pem: pair.serialize_pem(),
            pair,
        })
    }

    /// Reads a PEM private key: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
    /// P-256 (`EC PRIVATE KEY`). The result is always PKCS#8.
    ///
    /// # Errors
    /// [`PkiError::InvalidKey`] for anything else, including encrypted keys.
    pub fn from_pem(text: &str) -> Result<Self, PkiError> {
        let invalid = |reason: &str| PkiError::InvalidKey {
            reason: reason.to_owned(),
        };
        if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(invalid(
                "the key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)",
            ));
        }
        if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
            let key = rsa::PrivateKey::from_pkcs1_pem(text)
                .map_err(|e| invalid(&format!("bad PKCS#1 RSA key: {e}")))?;
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(gen_err)?
                .to_string();
            return Self::from_pkcs8_pem(&pem, &PKCS_RSA_SHA256);
        }
        if text.contains("-----BEGIN EC PRIVATE KEY-----") {
            let key = p256::SecretKey::from_sec1_pem(text)
                .map_err(|_| invalid("not a P-256 EC key (only P-256 is supported)"))?;
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(gen_err)?
                .to_string();
            return Self::from_pkcs8_pem(&pem, &PKCS_ECDSA_P256_SHA256);
        }
        if text.contains("-----BEGIN PRIVATE KEY-----") {
            if p256::SecretKey::from_pkcs8_pem(text).is_ok() {
                return Self::from_pkcs8_pem(text, &PKCS_ECDSA_P256_SHA256);
            }
            if rsa::PrivateKey::from_pkcs8_pem(text).is_ok() {
                return Self::from_pkcs8_pem(text, &PKCS_RSA_SHA256);
            }
            return Err(invalid(
                "unsupported key type (cmesh supports ECDSA P-256 and RSA)",
            ));
        }
        Err(invalid("no PEM private key found"))
    }

    /// The PKCS#8 PEM text. Callers write it with mode 0600 and never log it.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The key pair for signing.
    pub fn pair(&self) -> &KeyPair {
        &self.pair
    }

    /// The DER SubjectPublicKeyInfo of the public half.
    pub fn public_key_spki(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// `ecdsa-p256`, `rsa-2048` … as far as can be told.
    pub fn algorithm_name(&self) -> &'static str {
        if self.pair.algorithm() == &PKCS_ECDSA_P256_SHA256 {
            "ecdsa-p256"
        } else {
            match rsa::PrivateKey::from_pkcs8_pem(&self.pem)
                .map(|k| rsa::traits::PublicKeyParts::size(&k))
            {
                Ok(256) => "rsa-2048",
                Ok(384) => "rsa-3072",
                Ok(512) => "rsa-4096",
                _ => "rsa",
            }
        }
    }
}

/// The public key bits embedded in a PKCS#8 PEM key, read without curve arithmetic: the SEC1
/// document of an EC key carries them (ring and openssl always write them), and an RSA key
/// holds its modulus and exponent. Compared with a certificate's subjectPublicKey bits, this
/// tells whether a key belongs to a certificate far faster than loading it for signing.
pub fn embedded_public_key(pem: &str) -> Option<Vec<u8>> {
    use pkcs8::der::{Decode, Document};
    const EC: &str = "1.2.840.10045.2.1";
    const RSA: &str = "1.2.840.113549.1.1.1";
    let (label, doc) = Document::from_pem(pem).ok()?;
    if label != "PRIVATE KEY" {
        return None;
    }
    let info = pkcs8::PrivateKeyInfoRef::from_der(doc.as_bytes()).ok()?;
    let oid = info.algorithm.oid.to_string();
    if oid == EC {
        let ec = sec1::EcPrivateKey::from_der(info.private_key.as_bytes()).ok()?;
        return ec.public_key.map(<[u8]>::to_vec);
    }
    if oid == RSA {
        use rsa::pkcs1::EncodeRsaPublicKey;
        let key = rsa::PrivateKey::from_pkcs8_der(doc.as_bytes()).ok()?;
        return key
            .to_public_key()
            .to_pkcs1_der()
            .ok()
            .map(|d| d.as_bytes().to_vec());
    }
    None
}

fn gen_err(e: impl std::fmt::Display) -> PkiError {
    PkiError::Generate {
        reason: e.to_string(),
    }
}
