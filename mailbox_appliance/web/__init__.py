"""The HTTP file-transfer station (twisted.web): resumable uploads (tus 1.0.0), downloads,
share links and the upload page."""
