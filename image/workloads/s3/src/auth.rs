//! The deployment's one access key. s3s verifies SigV4 (headers, presigned URLs with their
//! expiry, aws-chunked signatures) with the secret this returns.

use s3s::auth::{S3Auth, SecretKey};
use s3s::S3Result;

use crate::config::Credentials;

pub struct OneKey {
    access_key: String,
    secret: SecretKey,
}

impl OneKey {
    pub fn new(credentials: &Credentials) -> Self {
        OneKey {
            access_key: credentials.access_key.clone(),
            secret: SecretKey::from(credentials.secret_key()),
        }
    }
}

#[async_trait::async_trait]
impl S3Auth for OneKey {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == self.access_key {
            Ok(self.secret.clone())
        } else {
            // S3's answer for a key it does not know (s3s's SimpleAuth says NotSignedUp).
            Err(s3s::s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_configured_key_has_a_secret() {
        let auth = OneKey::new(&Credentials::new(
            "AKIDLATTICE".into(),
            "s3cret-s3cret".into(),
        ));
        assert_eq!(
            auth.get_secret_key("AKIDLATTICE").await.unwrap().expose(),
            "s3cret-s3cret"
        );
        let err = auth.get_secret_key("AKIDOTHER").await.unwrap_err();
        assert_eq!(err.code().as_str(), "InvalidAccessKeyId");
    }
}
