"""The customer console at /console/ (docs/console.md): server-rendered pages for an account's people."""
