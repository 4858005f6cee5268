"""Knowledge bases: document ingestion, chunking, indexing and passage retrieval."""

from liveavatar.knowledge.chunking import Chunk, chunk_text
from liveavatar.knowledge.extract import detect_format, extract_text
from liveavatar.knowledge.index import IndexCache, KnowledgeIndex, Passage
from liveavatar.knowledge.ingest import DocumentStatus, Ingestor, IngestStatus

__all__ = [
    "Chunk",
    "DocumentStatus",
    "IndexCache",
    "IngestStatus",
    "Ingestor",
    "KnowledgeIndex",
    "Passage",
    "chunk_text",
    "detect_format",
    "extract_text",
]
