"""Custom avatars: from a photo or video (URL, upload or local file) to a ready pack, in the background."""
