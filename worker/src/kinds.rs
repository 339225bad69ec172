//! The built-in kinds that do real work (e-mail, thumbnails, webhooks) and the
//! typed configuration they need, registered next to `echo`/`sleep`/`fail`.

use std::sync::Arc;

use jobstream_core::files::FileStore;

use crate::email::{MailConfig, MailConfigError, Mailer, RegistrationEmail, SendEmail};
use crate::handler::Registry;
use crate::thumbnail::{ImageLimits, Thumbnail};
use crate::webhook::{Webhook, WebhookConfig};

/// Everything the real built-in kinds need.
#[derive(Debug, Clone)]
pub struct KindsConfig {
    /// E-mail: SMTP or the mailbox folder.
    pub mail: MailConfig,
    /// The files bucket that thumbnails read from and write to.
    pub files: FileStore,
    /// What the image decoder accepts.
    pub images: ImageLimits,
    /// Webhook address policy and limits.
    pub webhook: WebhookConfig,
}

impl Registry {
    /// A registry with every built-in kind: `echo`, `sleep`, `fail`, `email.send`,
    /// `email.registration`, `image.thumbnail` and `http.request`.
    pub fn with_all_builtins(config: KindsConfig) -> Result<Self, MailConfigError> {
        let mut r = Registry::with_builtins();
        r.register_real_kinds(config)?;
        Ok(r)
    }

    /// Registers the e-mail, thumbnail and webhook kinds.
    pub fn register_real_kinds(
        &mut self,
        config: KindsConfig,
    ) -> Result<&mut Self, MailConfigError> {
        let mailer = Arc::new(Mailer::new(&config.mail)?);
        self.register("email.send", SendEmail::new(mailer.clone()))
            .register("email.registration", RegistrationEmail::new(mailer))
            .register(
                "image.thumbnail",
                Thumbnail::new(config.files, config.images),
            )
            .register("http.request", Webhook::new(config.webhook));
        Ok(self)
    }
}
