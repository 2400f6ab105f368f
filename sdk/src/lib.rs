//! Guest SDK for Switchboard plugins (filled in by the plugins issue).
