//! Checking the instance identity document's `rsa2048` signature.
//!
//! The `rsa2048` item is a base64 PKCS#7 (CMS SignedData, RFC 5652) carrying the document and
//! an RSA-2048/SHA-256 signature, normally over signed attributes whose `messageDigest` is the
//! document's SHA-256. AWS publishes one public certificate per region; the enrollment side
//! passes that certificate's RSA public key here. Parsing uses the `cms`/`der` crates; the RSA
//! check is aws-lc-rs (the `rsa` crate is avoided: RUSTSEC-2023-0071).

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine as _;
use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode};

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
/// A PKCS#7 larger than this is not an identity document.
const MAX_PKCS7_BYTES: usize = 64 * 1024;

/// Why a signed identity document was rejected.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Not base64, or too large.
    #[error("rsa2048 is not a base64 PKCS#7 blob of at most {MAX_PKCS7_BYTES} bytes")]
    Encoding,
    /// The DER structure is not a CMS SignedData.
    #[error("rsa2048 is not a CMS SignedData: {0}")]
    Structure(String),
    /// No embedded document.
    #[error("rsa2048 carries no document")]
    NoContent,
    /// No signer, or more than one.
    #[error("rsa2048 must carry exactly one signer, found {0}")]
    Signers(usize),
    /// A digest other than SHA-256.
    #[error("rsa2048 uses digest {0}, expected SHA-256")]
    Digest(String),
    /// The signed `messageDigest` attribute is missing or does not match the document.
    #[error("the signed message digest does not match the document")]
    DigestMismatch,
    /// The RSA signature does not verify with the given key.
    #[error("the RSA signature does not verify with the given public key")]
    BadSignature,
    /// The document is not UTF-8.
    #[error("the signed document is not UTF-8 text")]
    NotText,
}

fn structure(e: der::Error) -> VerifyError {
    VerifyError::Structure(e.to_string())
}

/// Verifies `rsa2048_b64` (as served by IMDS, line breaks allowed) with an RSA public key
/// (PKCS#1 `RSAPublicKey` DER) and returns the signed document.
pub fn verify_rsa2048(rsa2048_b64: &str, rsa_public_key_der: &[u8]) -> Result<String, VerifyError> {
    let compact: String = rsa2048_b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.len() > MAX_PKCS7_BYTES * 4 / 3 + 4 {
        return Err(VerifyError::Encoding);
    }
    let der_bytes =
        base64::engine::general_purpose::STANDARD.decode(compact).map_err(|_| VerifyError::Encoding)?;
    let info = ContentInfo::from_der(&der_bytes).map_err(structure)?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(VerifyError::Structure(format!("content type {} is not signedData", info.content_type)));
    }
    let signed: SignedData = info.content.decode_as().map_err(structure)?;
    let content = signed.encap_content_info.econtent.as_ref().ok_or(VerifyError::NoContent)?;
    let document = content.decode_as::<OctetString>().map_err(structure)?.into_bytes();
    let signers = &signed.signer_infos.0;
    let signer = match signers.iter().collect::<Vec<_>>().as_slice() {
        [one] => *one,
        other => return Err(VerifyError::Signers(other.len())),
    };
    if signer.digest_alg.oid != ID_SHA256 {
        return Err(VerifyError::Digest(signer.digest_alg.oid.to_string()));
    }
    // With signed attributes, the signature covers their DER `SET OF` encoding and the
    // `messageDigest` attribute binds the document; without them it covers the document.
    let signed_bytes = match &signer.signed_attrs {
        None => document.clone(),
        Some(attrs) => {
            let expected = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &document);
            let digest = attrs
                .iter()
                .find(|a| a.oid == ID_MESSAGE_DIGEST)
                .and_then(|a| a.values.iter().next())
                .and_then(|v| v.decode_as::<OctetString>().ok())
                .ok_or(VerifyError::DigestMismatch)?;
            if digest.as_bytes() != expected.as_ref() {
                return Err(VerifyError::DigestMismatch);
            }
            attrs.to_der().map_err(structure)?
        }
    };
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, rsa_public_key_der)
        .verify(&signed_bytes, signer.signature.as_bytes())
        .map_err(|_| VerifyError::BadSignature)?;
    String::from_utf8(document).map_err(|_| VerifyError::NotText)
}

/// Verifies the `signature` item (base64 RSA-SHA256 over the document bytes) with an RSA
/// public key (PKCS#1 `RSAPublicKey` DER).
pub fn verify_signature(
    document: &str,
    signature_b64: &str,
    rsa_public_key_der: &[u8],
) -> Result<(), VerifyError> {
    let compact: String = signature_b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.len() > 4096 {
        return Err(VerifyError::Encoding);
    }
    let sig = base64::engine::general_purpose::STANDARD.decode(compact).map_err(|_| VerifyError::Encoding)?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, rsa_public_key_der)
        .verify(document.as_bytes(), &sig)
        .map_err(|_| VerifyError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_rejected_not_panicked_on() {
        assert!(matches!(verify_rsa2048("not base64!", b""), Err(VerifyError::Encoding)));
        assert!(matches!(verify_rsa2048("AAAA", b""), Err(VerifyError::Structure(_))));
        let huge = "A".repeat(200_000);
        assert!(matches!(verify_rsa2048(&huge, b""), Err(VerifyError::Encoding)));
    }
}
