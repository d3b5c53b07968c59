//! How a bundle's chunk lists are stored and decoded (FORMAT §3, §3.2): the binary chunk index
//! of a format version 3 bundle, encoded and decoded record by record (`record`); the image's
//! chunks of such a bundle, from its dictionary and index checked against the signed manifest
//! (`stored`), or for an image too large to hold them, streamed from a proven copy on disk
//! (`streamed`); the JSON chunk entries of format versions 1 and 2 and of boot assets
//! (`entries`); and the [`Chunk`] both become (`chunk`). The manifest schema
//! ([`crate::schema`]) validates the document and hands each chunk list here.

mod chunk;
mod entries;
mod record;
mod stored;
mod streamed;
mod tree;

pub(crate) use chunk::ImageChunks;
pub use chunk::{max_frame_len, pieces, Chunk, StoredFrame, StreamedIndex};
pub(crate) use entries::build_chunks;
pub use entries::ChunkDoc;
pub use record::{encode, IndexWriter, Record, RecordForm, CONTINUED};
pub use stored::Tail;
pub(crate) use stored::{check_dictionary_size, check_region_size, image_chunks, IndexedImage};
pub use streamed::{ChunkStream, IndexFile, TreeGroup, TreeGroups, TreeHead};
pub use tree::{Tree, TreeFiles, TreeSummary, TreeWriter, GROUP, HASH_LEN};
