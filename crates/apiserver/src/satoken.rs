//! Service-account tokens: the TokenRequest API (`serviceaccounts/<name>/token`,
//! what `kubectl create token` and the kubelet's projected token volumes
//! call) and bearer-token authentication.
//!
//! Tokens are JWTs signed with ES256 by a key shared through the store
//! (see [`crate::join`]), so every server on one etcd accepts every
//! server's tokens. Claims follow upstream's bound tokens: `iss`, `sub`
//! (`system:serviceaccount:<ns>:<name>`), `aud`, `exp`/`iat`/`nbf`, `jti`,
//! and `kubernetes.io` with the namespace, the service account and the pod
//! the token is bound to. A token stops authenticating when it expires,
//! or when its service account or bound pod is gone or replaced.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

/// The issuer (and default audience), upstream's default for a cluster
/// domain of `cluster.local`.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Shortest lifetime a client may ask for (upstream: 10 minutes).
pub const MIN_EXPIRATION: i64 = 600;
/// Lifetime when the request names none.
pub const DEFAULT_EXPIRATION: i64 = 3600;

/// Signs and verifies tokens.
pub struct Signer {
    key: EcdsaKeyPair,
    public: Vec<u8>,
    kid: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

/// A new P-256 private key, PKCS#8.
pub fn generate_key() -> Result<Vec<u8>, String> {
    let rng = ring::rand::SystemRandom::new();
    EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map(|d| d.as_ref().to_vec())
        .map_err(|e| format!("generating the service-account key: {e}"))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Signer {
    /// A signer from a PKCS#8 P-256 key.
    pub fn new(pkcs8: &[u8]) -> Result<Signer, String> {
        let rng = ring::rand::SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                .map_err(|e| format!("service-account key: {e}"))?;
        let public = key.public_key().as_ref().to_vec();
        let digest = ring::digest::digest(&ring::digest::SHA256, &public);
        let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]);
        Ok(Signer { key, public, kid })
    }

    /// Signs `claims` as a compact JWS.
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = ring::rand::SystemRandom::new();
        let sig = self
            .key
            .sign(&rng, input.as_bytes())
            .map_err(|e| format!("signing: {e}"))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }

    /// Checks the signature, issuer, audience and time window; returns
    /// the claims.
    pub fn verify(&self, token: &str) -> Result<Value, String> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT".into());
        };
        let header: Value = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("bad JWT header")?;
        if header["alg"] != "ES256" {
            return Err("unsupported signing algorithm".into());
        }
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| "bad JWT signature")?;
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &self.public)
            .verify(format!("{h}.{p}").as_bytes(), &sig)
            .map_err(|_| "invalid signature")?;
        let claims: Value = URL_SAFE_NO_PAD
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("bad JWT claims")?;
        if claims["iss"] != ISSUER {
            return Err("unknown issuer".into());
        }
        let aud_ok = match &claims["aud"] {
            Value::String(a) => a == ISSUER,
            Value::Array(a) => a.iter().any(|x| x == ISSUER),
            _ => false,
        };
        if !aud_ok {
            return Err("token audiences do not include the API server".into());
        }
        let t = now();
        // A minute of leeway for clocks, as upstream.
        if claims["exp"].as_i64().is_none_or(|e| e + 60 < t) {
            return Err("token has expired".into());
        }
        if claims["nbf"].as_i64().is_some_and(|n| n - 60 > t) {
            return Err("token is not valid yet".into());
        }
        Ok(claims)
    }
}

/// The claims of a token for service account `sa` (an object) in `ns`.
pub fn claims(
    sa: &Value,
    ns: &str,
    audiences: &[String],
    expiration: i64,
    pod: Option<(&str, &str)>,
) -> Value {
    let t = now();
    let name = sa["metadata"]["name"].as_str().unwrap_or_default();
    let mut k8s = json!({
        "namespace": ns,
        "serviceaccount": {"name": name, "uid": sa["metadata"]["uid"]},
    });
    if let Some((pname, puid)) = pod {
        k8s["pod"] = json!({"name": pname, "uid": puid});
    }
    json!({
        "aud": if audiences.is_empty() { vec![ISSUER.to_string()] } else { audiences.to_vec() },
        "exp": t + expiration,
        "iat": t,
        "nbf": t,
        "iss": ISSUER,
        "jti": uuid::Uuid::new_v4().to_string(),
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "kubernetes.io": k8s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_with_their_key_and_audience() {
        let s = Signer::new(&generate_key().unwrap()).unwrap();
        let sa = json!({"metadata": {"name": "default", "uid": "u1"}});
        let tok = s
            .sign(&claims(&sa, "ns", &[], 600, Some(("p", "pu"))))
            .unwrap();
        let c = s.verify(&tok).unwrap();
        assert_eq!(c["sub"], "system:serviceaccount:ns:default");
        assert_eq!(c["kubernetes.io"]["pod"]["uid"], "pu");

        let other = Signer::new(&generate_key().unwrap()).unwrap();
        assert_eq!(other.verify(&tok).unwrap_err(), "invalid signature");
        let vault = s
            .sign(&claims(&sa, "ns", &["vault".into()], 600, None))
            .unwrap();
        assert!(s.verify(&vault).unwrap_err().contains("audiences"));
        let mut old = claims(&sa, "ns", &[], 600, None);
        old["exp"] = json!(now() - 3600);
        assert!(
            s.verify(&s.sign(&old).unwrap())
                .unwrap_err()
                .contains("expired")
        );
        let mut tampered = tok.clone();
        tampered.insert(tok.find('.').unwrap() + 2, 'x');
        assert!(s.verify(&tampered).is_err());
    }
}
