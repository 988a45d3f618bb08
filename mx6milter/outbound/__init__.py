"""The MX6 sending side: the plan an aware sender follows, zone records, the audit, the sender."""
