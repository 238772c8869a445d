-- An application's own migration, to prove teamkey's coexist with it.
CREATE TABLE scans (id INTEGER PRIMARY KEY, target VARCHAR(200) NOT NULL);
