"""The directory side: syncrepl consumer of the local LDAP replica, profiles, the replica tool.
Imports bootserverd's model, config and inventory; never app, services or the protocols."""
