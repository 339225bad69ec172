//! Uploaded files and generated thumbnails, in a JetStream object store bucket
//! (`FILES` by default). Each object is named by its id (UUIDv7) and carries
//! its owner and content type in the object's metadata: who may read a file is
//! decided from the object store itself, never from SQL.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    object_store::{self, GetErrorKind, InfoErrorKind, ObjectMetadata, ObjectStore},
    stream::StorageType,
};
use serde::Serialize;
use tokio::io::AsyncReadExt;
use uuid::Uuid;

const META_OWNER: &str = "owner";
const META_CONTENT_TYPE: &str = "content-type";
const META_SOURCE: &str = "source-file";
const META_JOB: &str = "job";

/// Settings of the files bucket.
#[derive(Debug, Clone)]
pub struct FileSettings {
    /// Bucket name.
    pub bucket: String,
    /// Largest total size of the bucket in bytes (`-1`: unlimited).
    pub max_bucket_bytes: i64,
    /// Replicas: 1 in development, 3 in production clusters.
    pub replicas: usize,
}

impl Default for FileSettings {
    fn default() -> Self {
        FileSettings {
            bucket: "FILES".to_owned(),
            max_bucket_bytes: -1,
            replicas: 1,
        }
    }
}

/// Errors of the files bucket.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The bucket could not be opened or created.
    #[error("cannot open object store bucket {bucket}: {reason}")]
    Bucket {
        /// Bucket name.
        bucket: String,
        /// Why.
        reason: String,
    },
    /// The file is larger than the caller accepts.
    #[error("file {id} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// File id.
        id: Uuid,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Reading or writing an object failed (NATS unreachable, timeout …).
    #[error("object store: {0}")]
    Io(String),
}

/// What is stored about a file, from the object's metadata.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileInfo {
    /// File id.
    pub id: Uuid,
    /// `sub` of the user who owns it.
    pub owner: String,
    /// MIME type, checked against the bytes at upload.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// For a thumbnail: the file it was made from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_file: Option<Uuid>,
    /// For a thumbnail: the job that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
}

/// A file to store.
#[derive(Debug, Clone)]
pub struct NewFile {
    /// File id (the object's name).
    pub id: Uuid,
    /// Owner (`sub`).
    pub owner: String,
    /// MIME type.
    pub content_type: String,
    /// The file it was derived from.
    pub source_file: Option<Uuid>,
    /// The job that produced it.
    pub job_id: Option<Uuid>,
}

/// The bucket of files. Cheap to clone.
#[derive(Clone)]
pub struct FileStore {
    store: ObjectStore,
    bucket: String,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("bucket", &self.bucket)
            .finish()
    }
}

impl FileStore {
    /// Opens the bucket, creating it when missing. Safe to call from every process.
    pub async fn open(js: &jetstream::Context, settings: &FileSettings) -> Result<Self, FileError> {
        let bucket_err = |reason: String| FileError::Bucket {
            bucket: settings.bucket.clone(),
            reason,
        };
        let store = match js.get_object_store(&settings.bucket).await {
            Ok(s) => s,
            Err(_) => {
                let created = js
                    .create_object_store(object_store::Config {
                        bucket: settings.bucket.clone(),
                        description: Some("jobstream uploads and thumbnails".into()),
                        max_bytes: settings.max_bucket_bytes,
                        storage: StorageType::File,
                        num_replicas: settings.replicas,
                        ..Default::default()
                    })
                    .await;
                match created {
                    Ok(s) => s,
                    // Another process may have created it at the same moment.
                    Err(e) => js
                        .get_object_store(&settings.bucket)
                        .await
                        .map_err(|_| bucket_err(e.to_string()))?,
                }
            }
        };
        Ok(FileStore {
            store,
            bucket: settings.bucket.clone(),
        })
    }

    /// Name of the bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Stores `bytes` under `file.id` (replacing an object of that id) and waits until it is stored.
    pub async fn put(&self, file: &NewFile, bytes: &[u8]) -> Result<FileInfo, FileError> {
        let mut metadata = HashMap::from([
            (META_OWNER.to_owned(), file.owner.clone()),
            (META_CONTENT_TYPE.to_owned(), file.content_type.clone()),
        ]);
        if let Some(s) = file.source_file {
            metadata.insert(META_SOURCE.to_owned(), s.to_string());
        }
        if let Some(j) = file.job_id {
            metadata.insert(META_JOB.to_owned(), j.to_string());
        }
        let meta = ObjectMetadata {
            name: file.id.to_string(),
            metadata,
            ..Default::default()
        };
        let mut reader = bytes;
        let info = self
            .store
            .put(meta, &mut reader)
            .await
            .map_err(|e| FileError::Io(e.to_string()))?;
        from_object_info(&info).ok_or_else(|| FileError::Io("stored object lacks metadata".into()))
    }

    /// What is stored about a file; `None` when there is no such file.
    pub async fn info(&self, id: Uuid) -> Result<Option<FileInfo>, FileError> {
        match self.store.info(id.to_string()).await {
            Ok(info) if !info.deleted => Ok(from_object_info(&info)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == InfoErrorKind::NotFound => Ok(None),
            Err(e) => Err(FileError::Io(e.to_string())),
        }
    }

    /// A file's info and bytes, refusing files larger than `limit` before reading them.
    pub async fn get(
        &self,
        id: Uuid,
        limit: u64,
    ) -> Result<Option<(FileInfo, Vec<u8>)>, FileError> {
        let mut object = match self.store.get(id.to_string()).await {
            Ok(o) => o,
            Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(FileError::Io(e.to_string())),
        };
        let Some(info) = from_object_info(object.info()) else {
            return Ok(None);
        };
        if info.size > limit {
            return Err(FileError::TooLarge {
                id,
                size: info.size,
                limit,
            });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0));
        tokio::time::timeout(
            Duration::from_secs(60),
            (&mut object).take(limit + 1).read_to_end(&mut bytes),
        )
        .await
        .map_err(|_| FileError::Io(format!("reading file {id} timed out")))?
        .map_err(|e| FileError::Io(e.to_string()))?;
        Ok(Some((info, bytes)))
    }
}

fn from_object_info(info: &object_store::ObjectInfo) -> Option<FileInfo> {
    let id = Uuid::parse_str(&info.name).ok()?;
    let meta = &info.metadata;
    let parse = |k: &str| meta.get(k).and_then(|v| Uuid::parse_str(v).ok());
    Some(FileInfo {
        id,
        owner: meta.get(META_OWNER)?.clone(),
        content_type: meta
            .get(META_CONTENT_TYPE)
            .cloned()
            .unwrap_or_else(|| "application/octet-stream".into()),
        size: info.size as u64,
        source_file: parse(META_SOURCE),
        job_id: parse(META_JOB),
    })
}

/// Image types jobstream accepts and can decode.
pub const IMAGE_TYPES: [&str; 3] = ["image/png", "image/jpeg", "image/webp"];

/// The image type the bytes actually are (by their magic numbers), if one of [`IMAGE_TYPES`].
pub fn sniff_image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_types_are_recognised_by_their_bytes() {
        assert_eq!(
            sniff_image_type(b"\x89PNG\r\n\x1a\nrest"),
            Some("image/png")
        );
        assert_eq!(
            sniff_image_type(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some("image/jpeg")
        );
        assert_eq!(
            sniff_image_type(b"RIFF\0\0\0\0WEBPVP8 "),
            Some("image/webp")
        );
        assert_eq!(sniff_image_type(b"GIF89a"), None);
        assert_eq!(sniff_image_type(b"<html>"), None);
        assert_eq!(sniff_image_type(b""), None);
    }
}
