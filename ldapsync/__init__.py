"""The directory side: syncrepl consumer of the local LDAP replica (issue 8)."""
