//! Integration tests of guestward-pkgfiles: one binary, one module per concern.
