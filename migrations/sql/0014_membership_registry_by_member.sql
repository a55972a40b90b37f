-- membership_registry keyed by member first (issue 17: AddMembers must cost the same whatever
-- the size of the group).
--
-- Keyed (group_id, kind, member_id), a command's probes (`present`) and inserts (the trigger)
-- landed in the group's own range of the key: a handful of hot pages while the group is small,
-- a different page per id (and a deeper, colder descent) once it holds a million members, on
-- top of the random inserts into the (member_id) index that every command paid anyway.
-- Keyed (member_id, group_id, kind), they land on random pages of one index that all groups
-- share, whatever the size of this one, and that index also serves lookups by member (the
-- rule evaluator's entries_of), so the separate member index goes. Scans of one group (purge,
-- the rule evaluator's rule_entries, deleted groups with entries) use (group_id, kind), whose
-- entries are ordered within a key by heap position (the key has no member_id), so a
-- command's inserts append at the end of the group's range instead of scattering through it;
-- member_id is carried along for index-only scans.
ALTER TABLE membership_registry DROP CONSTRAINT membership_registry_pkey;
DROP INDEX membership_registry_member_idx;
ALTER TABLE membership_registry
    ADD CONSTRAINT membership_registry_pkey PRIMARY KEY (member_id, group_id, kind);
CREATE INDEX membership_registry_group_idx ON membership_registry (group_id, kind)
    INCLUDE (member_id);
