-- Synthetic legacy data for tests, the demo, benchmarks and rehearsals.
--
-- Fills an EMPTY database that already has the application's schema
-- (sql/app/up.sql) with {{PROFILES}} users, one profile each, and the messy
-- legacy "socialLinks" JSON that relink has to cope with (SPEC §2, §3).
-- The caller replaces {{PROFILES}} (a positive integer), {{SEED}} (a float
-- in [-1, 1]), {{MIX}} ('default' or 'entries': the mixes below) and {{IDS}}
-- ('ordered' or 'uuid': see "Ids" below) textually and sends the whole file
-- as ONE simple-query batch: no psql meta-commands or variables, and every
-- statement runs in the one implicit transaction of that batch (which is
-- what makes SET LOCAL work).  {{MIX}} and {{IDS}} only ever stand in
-- comparisons of constants ('entries' = 'entries'), which the planner folds
-- away: each mix runs the plan it would have had alone, and the default mix
-- with ordered ids gives exactly the tables it gave before the others
-- existed.
--
-- Determinism: the same {{PROFILES}}, {{SEED}}, {{MIX}} and {{IDS}} give
-- byte-identical tables.  The mixes draw the same random() calls in the same
-- order and differ only in how the draws are read, and the ids draw none,
-- so the ids do not change "socialLinks" (only which users the hashed pass
-- picks).
-- random() is one per-backend generator, so it is deterministic only if it is
-- called in the same order every time: one process (no parallel workers) and
-- plans whose evaluation order is fixed by construction (function scans over
-- generate_series, subqueries kept apart with OFFSET 0 or volatile target
-- lists, no sorts or hashes between the generator and the random() calls).
-- The user-created links are the one pass that READS a table, and a heap scan
-- does not promise an order (synchronized seq scans may start mid-table), so
-- that pass uses no random(): its choices hash (profile id, seed) instead.
--
-- The default mix.  Percentages are as drawn; [brackets] are what seed 0.42
-- gave for 1,000,000 profiles, counted back in SQL (shapes classified from
-- the JSON, so garbage that happens to look like a shape counts as that
-- shape).
--
--   profiles                                          of all / of non-null
--     8%    "socialLinks" SQL NULL                    [8.02%]
--    45%    shape 1  object key -> URL string         [46.0%]
--    15%    shape 2  object key -> {url|link, label}, a tenth of the
--                    entries plain strings            [14.9%]
--    15%    shape 3  array of strings                 [14.9%]
--    12%    shape 4  array of {url|href|link|URL, label, platform|key|
--                    Platform, type}                  [12.0%]
--     5%    shape 5  a JSON string holding the JSON text of a shape 1 (60%)
--                    or shape 3 (40%) value: double-encoded  [5.0%]
--     8%    shape 6  garbage: {}, [], "", "   ", numbers, booleans, JSON
--                    null, nested arrays/objects, "not json at all", broken
--                    JSON in a string, a lone top-level URL string  [7.2%]
--   (the percentages of shapes are of the non-null profiles)
--   1 to 5 values per profile of shapes 1-5 (25/33/24/12/6%, 2.41 on
--   average; objects lose a few to repeated keys).
--   [1,000,000 profiles, 919,840 with non-null "socialLinks", 2,025,715
--   legacy values counting object keys, array elements and top-level
--   strings, double-encoded ones decoded once; plus 18,324 top-level
--   numbers/booleans/nulls]
--
--   values, by what they point at (the key's spelling follows the kind)
--    30%    website   website/Website/WEBSITE/site/homepage/web/" web "/
--                     portfolio/Portfolio/"personal website"; half of them
--                     the profile's own site example-<site>.com
--    18%    imdb      imdb/IMDB/IMDb/imdb_url; name/nm + 7 digits, a title
--    12%    showreel  showreel/Demo-Reel/reel/demo_reel/demoreel/
--                     "Showreel "/vimeo/youtube; vimeo, youtube, dropbox,
--                     drive links
--    22.4%  social    instagram 8, twitter 5.5, linkedin 4.5, youtube 2.2,
--                     vimeo 2.2 (keys mostly as named, some capitalised, a
--                     few unknown spellings: insta, twitter_handle, linked_in)
--    14.6%  other     unknown or type-"other" keys (blog, agent, spotlight,
--                     linktree, soundcloud, facebook, tiktok, github, x, ...)
--     3%    junk      not a url, javascript:alert(1), http://localhost/,
--                     https://1.2.3.4/, http://[::1]/, mailto:, ftp:,
--                     credentials, "", "   ", N/A, numbers, true, null,
--                     nested arrays, a 2 KiB URL
--   and 6.7% of the profiles with 2+ values list their own site twice, in
--   two spellings (trailing slash, http, uppercase host, no scheme, :443,
--   utm, fragment).  Across kinds, of all values [as measured]:
--     no scheme (www.x.com, x.com/…, //x.com)                   [12.0%]
--     bare handles (@jane_doe123, jane_doe123), mostly under
--       instagram/twitter/youtube keys                          [4.6%]
--     utm_/fbclid parameters                                    [3.0%]
--     same site as another value of the profile, spelled
--       differently (scheme, www, case, slash, query, fragment)  [3.0%]
--     invalid strings [2.8%] and non-string values [3.0%, mostly garbage]
--     non-ASCII (IDN hosts bücher-…, müller-…, 例え-…)           [2.8%]
--   plus ports, dot segments, padding.  Labels (shapes 2 and 4): 40% absent,
--   30% the usual name, the rest custom (emoji, non-ASCII), empty, blank,
--   over 40 characters, whitespace runs, or a number.  Hosts: example-<n>
--   with n < 100,000 and the real platforms, so hosts repeat across profiles
--   as in production [about 340,000 distinct host-like strings].
--
--   users: 3% already have 1 or 2 rows in profile_links, created through the
--   new API (ids 'ul…', positions 0.., timestamps 2024-01-01).  The first
--   is, for half of those whose legacy data has one, their own site or IMDb
--   page in the canonical form the API stores, so deduplication against
--   existing rows matters.  [40,086 rows for 29,986 users; 7,078 equal a
--   legacy value of the same profile up to scheme, www, case and trailing
--   slash]
--
-- The entries mix ({{MIX}} = 'entries'): what a link-in-bio editor leaves,
-- arrays of entry objects with every field name real data uses (SPEC §2),
-- about 4 values per profile, the same link spelled twice in a quarter of
-- the profiles, and a few long lists, so that sizing chunks by time matters.
-- Values are drawn as in the default mix (same kinds, keys, templates,
-- labels); what differs, as drawn [and as counted by sql/bench/mix.sql for
-- seed 0.42 at 100,000 profiles, NOT 1,000,000 (a generator run at 1M was
-- not affordable on the shared machine these figures were taken on)]:
--
--   profiles                                          of all / of non-null
--     5%    "socialLinks" SQL NULL                    [5.1%]
--    10%    shape 1  object key -> URL string         [10.1%]
--     8%    shape 2  object key -> entry              [7.8%]
--    18%    shape 3  array of strings                 [17.9%]
--    56%    shape 4  array of entries                 [56.5%]
--     4%    shape 5  double-encoded: an object, an array of strings or an
--                    array of entries (20/20/60%)     [4.0%]
--     4%    shape 6  garbage, as in the default mix   [3.6%]
--   so arrays are 74% of the non-null profiles, entry objects (shapes 2 and
--   4) 64% [71.7% of all values are entry objects].
--   1 to 6 values per profile (12/22/27/20/11/7%), and 1% of the profiles
--   of shapes 1-5 heavy: 50 to 150 values, always an array (a heavy draw of
--   shape 1 or 2 becomes shape 4).  [367,531 values: 3.68 per profile, 3.87
--   per non-null profile, 4.02 per profile with values; 853 heavy profiles
--   (0.85%) holding 84,809 of them (23%), 50 to 150 each]
--   Entry fields: URL url 50%, href 20%, link 15%, URL, Url, value 5% each
--   (shape 2: as in the default mix); label (when there is one, 60%) under
--   label 50%, title 30%, name 15%, text 5%; key (shape 4) platform 30%,
--   network 15%, key, service, provider, Platform 5% each, none 35%; type
--   as in the default mix, plus 5% naming the platform ("type":
--   "instagram").
--   27% of the profiles with two values or more list their own site twice
--   (the default's 'dup' spellings: scheme, www, host case, trailing slash,
--   utm, fragment, port).  [24,934 profiles (24.9%) hold two values equal up
--   to case, scheme, www, default port, trailing slash, query and fragment;
--   12.3% of all values duplicate another value of their profile, a third
--   of them in the heavy profiles]
--   users: as in the default mix [with ordered ids, 4,158 rows for 3,081
--   users; the other figures do not depend on the ids].
--
-- Ids.  'ordered' (the default): cuid-like, see the INSERT INTO users below.
-- 'uuid': random version-4 UUIDs (Prisma's @default(uuid())), so that keyset
-- order by profile id is unrelated to insertion order and to the user's id:
-- the "userId" and "profileId" indexes of profile_links are written all
-- over instead of near their right ends.  User-created links get UUIDs too.
--
-- Speed: one INSERT … SELECT … FROM generate_series per table, JSON built
-- with aggregates, constant arrays and format(), no per-row SQL functions or
-- subqueries.  1,000,000 profiles on this project's 2-core machine: 21.6 s
-- with the server otherwise idle (users 3.2 s, profiles 15.8 s, links
-- 2.2 s, ANALYZE 0.4 s), 22-35 s with other work running; 100,000: 2.3 s.
-- The entries mix builds about 1.8 times as many values: 100,000 profiles
-- took 8.2 s against the default's 5.2 s on the same busy machine, uuid ids
-- another 10%.

-- Parallel workers would each run their own random() sequence in whatever
-- order they get pages: never reproducible.
SET LOCAL max_parallel_workers_per_gather = 0;
-- JIT compiles the large expressions below for the 1M-row estimate and does
-- not earn it back (measured: 5-10% slower with it); it changes no result.
SET LOCAL jit = off;
-- Foreign-key checks are one trigger call and one index probe per row: about
-- a third of the profiles insert.  Every reference below holds by
-- construction (profile i -> user i, links copy their profile's own ids), so
-- where the role may, skip them for this transaction (replica mode fires no
-- ordinary triggers, RI triggers included).  A role that may not keeps them
-- and is merely slower: the WHERE runs before set_config is ever called.
-- (Superuser rather than PostgreSQL 15's has_parameter_privilege: works on
-- any version, and a role granted just this setting is not worth a case.)
SELECT set_config('session_replication_role', 'replica', true)
WHERE (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
SELECT setseed({{SEED}});

-- Ids ({{IDS}} = 'ordered') look like the application's cuids: 'c', a
-- prefix letter, the row number in fixed-width hex (so keyset order by id is
-- insertion order, as a cuid's leading timestamp makes it in production),
-- then md5 noise.  25 characters like a cuid.  With 'uuid' they are what
-- Prisma's @default(uuid()) gives, random version-4 UUIDs, here an md5 of
-- (prefix, row number, seed) with the version and variant digits set: no
-- order at all, neither by insertion nor between a profile and its user.
-- Profile i belongs to user i either way.
INSERT INTO users (id)
SELECT CASE '{{IDS}}'
    WHEN 'uuid' THEN overlay(overlay(md5('u' || i || '/' || ({{SEED}})::text)
                                     PLACING '4' FROM 13) PLACING '8' FROM 17)::uuid::text
    ELSE 'cu' || lpad(to_hex(i), 10, '0') || substr(md5('u' || i), 1, 13)
END
FROM generate_series(1, {{PROFILES}}) AS g(i);

INSERT INTO profiles (id, "userId", "socialLinks")
SELECT
    CASE '{{IDS}}'
        WHEN 'uuid' THEN overlay(overlay(md5('p' || p.i || '/' || ({{SEED}})::text)
                                         PLACING '4' FROM 13) PLACING '8' FROM 17)::uuid::text
        ELSE 'cp' || lpad(to_hex(p.i), 10, '0') || substr(md5('p' || p.i), 1, 13)
    END,
    CASE '{{IDS}}'
        WHEN 'uuid' THEN overlay(overlay(md5('u' || p.i || '/' || ({{SEED}})::text)
                                         PLACING '4' FROM 13) PLACING '8' FROM 17)::uuid::text
        ELSE 'cu' || lpad(to_hex(p.i), 10, '0') || substr(md5('u' || p.i), 1, 13)
    END,
    CASE p.shape
        WHEN 0 THEN NULL
        -- Double-encoded: the JSON text of a shape 1 or 3 value (entries mix:
        -- or 4), stored as a JSON string (what an ORM writing
        -- JSON.stringify(links) produced).
        WHEN 5 THEN to_jsonb(coalesce(v.objects, v.arrays)::text)
        WHEN 6 THEN format((ARRAY[
            '{}', '{}', '[]', '[]', '""', '""', '"   "',
            '0', '42', '3.14', 'true', 'false', 'null',
            '"not json at all"',
            '"https://www.example-%1$s.com/"',
            '"www.example-%1$s.com"',
            '"{\"website\": \"https://www.example-%1$s.com/\""',
            '[[["https://www.example-%1$s.com/"]]]',
            '[["https://www.example-%1$s.com/", "https://vimeo.com/%1$s"]]',
            '{"website": {"url": {"href": "https://www.example-%1$s.com/"}}}',
            '{"links": [{"url": "https://www.example-%1$s.com/"}]}',
            '[1, true, null, {}]',
            '{"": ""}',
            '{"website": null, "imdb": 12345}'
        ])[1 + floor(p.r_pick * 24)::int], p.site)::jsonb
        ELSE coalesce(v.objects, v.arrays)
    END
FROM (
    -- Per-profile choices.  OFFSET 0 keeps this a separate step, so that each
    -- derived column is computed once per row instead of being inlined (and
    -- recomputed) at every place the outer query uses it.
    SELECT
        i,
        shape,
        -- The JSON structure the values are assembled into; a double-encoded
        -- profile (shape 5) wraps an object (60%) or an array of strings
        -- (entries mix: an object, an array of strings or of entries,
        -- 20/20/60%).  Long lists are arrays: a heavy profile (entries mix)
        -- drawn as an object becomes an array of entries.
        CASE
            WHEN shape BETWEEN 1 AND 5 AND count_bucket = 6 THEN
                CASE WHEN shape = 3 THEN 3 ELSE 4 END
            WHEN shape BETWEEN 1 AND 4 THEN shape
            WHEN shape = 5 AND '{{MIX}}' = 'entries' THEN
                CASE WHEN r_pick < 0.2 THEN 1 WHEN r_pick < 0.4 THEN 3 ELSE 4 END
            WHEN shape = 5 THEN CASE WHEN r_pick < 0.6 THEN 1 ELSE 3 END
            ELSE 0
        END AS form,
        CASE
            WHEN shape NOT BETWEEN 1 AND 5 THEN 0
            -- Heavy: 50 to 150 values, drawn from the low digits of r_count
            -- (its bucket only says that it is at least 0.99).
            WHEN count_bucket = 6 THEN 50 + floor(r_count * 1e7)::int % 101
            ELSE count_bucket + 1
        END AS n_values,
        site,
        r_pick,
        -- About 6.7% (entries mix: 27%) of the profiles with two values or
        -- more list their own site twice, spelled differently (see the 'dup'
        -- kind below): with the coincidences of independent draws, about 3%
        -- of all values duplicate another value of their profile.
        r_dup < CASE '{{MIX}}' WHEN 'entries' THEN 0.27 ELSE 0.067 END
            AND shape BETWEEN 1 AND 5 AND count_bucket >= 1 AS has_dup
    FROM (
        -- Every random() of a profile, in one fixed order.  A target list
        -- with volatile functions is never flattened into the outer query.
        -- The mix only moves the bounds that the draws are bucketed by
        -- (width_bucket: 0 below the first bound, k from the k-th on); a
        -- CASE on the constant '{{MIX}}' is folded away when planning.
        SELECT
            i,
            -- 0 is NULL, k is shape k.  Default: 8% NULL, then shapes 1-6
            -- take 45/15/15/12/5/8% of the rest.  Entries: 5% NULL, then
            -- 10/8/18/56/4/4%.
            width_bucket(r_shape, CASE '{{MIX}}'
                WHEN 'entries' THEN ARRAY[0.05, 0.145, 0.221, 0.392, 0.924, 0.962]
                ELSE                ARRAY[0.08, 0.494, 0.632, 0.770, 0.8804, 0.9264]
            END::float8[]) AS shape,
            r_count,
            -- Values per profile: one more than the bucket.  Default: 1 to
            -- 5 values, 25/33/24/12/6%.  Entries: 1 to 6, 12/22/27/20/11/7%,
            -- and from the last bound on (1%) a heavy profile.
            width_bucket(r_count, CASE '{{MIX}}'
                WHEN 'entries' THEN ARRAY[0.12, 0.34, 0.61, 0.81, 0.92, 0.99]
                ELSE                ARRAY[0.25, 0.58, 0.82, 0.94]
            END::float8[]) AS count_bucket,
            -- The profile's own website: example-<site>.com.
            floor(r_site * 100000)::int AS site,
            r_pick,
            r_dup
        FROM (
            SELECT i, random() AS r_shape, random() AS r_count,
                   random() AS r_site, random() AS r_pick, random() AS r_dup
            FROM generate_series(1, {{PROFILES}}) AS g(i)
        ) AS r
    ) AS d
    OFFSET 0
) AS p
CROSS JOIN LATERAL (
    -- The profile's values, assembled in value order.  Only the aggregate of
    -- the profile's form sees any row (FILTER is checked before the
    -- aggregate's arguments are built), so the others cost nothing; over no
    -- rows at all (NULL and garbage profiles) every aggregate is NULL.
    -- No ORDER BY inside the aggregates: rows already arrive in
    -- generate_series order, and it would add a sort per profile.
    SELECT
        coalesce(
            jsonb_object_agg(s.key, s.val) FILTER (WHERE p.form = 1),
            jsonb_object_agg(
                s.key,
                CASE
                    -- A few shape-2 entries are plain strings: mixed shapes
                    -- inside one object are what years of edits leave.
                    WHEN s.r_field < 0.10 THEN s.val
                    ELSE jsonb_build_object(
                             CASE WHEN s.r_field < 0.15 THEN 'link' ELSE 'url' END,
                             s.val)
                         || CASE WHEN s.label IS NULL THEN '{}'::jsonb
                                 ELSE jsonb_build_object(s.label_field, s.label) END
                END
            ) FILTER (WHERE p.form = 2)
        ) AS objects,
        coalesce(
            jsonb_agg(s.val) FILTER (WHERE p.form = 3),
            jsonb_agg(
                -- Field names: see url_field, label_field and key_field.
                jsonb_build_object(s.url_field, s.val)
                || CASE WHEN s.label IS NULL THEN '{}'::jsonb
                        ELSE jsonb_build_object(s.label_field, s.label) END
                || CASE WHEN s.key_field IS NULL THEN '{}'::jsonb
                        ELSE jsonb_build_object(s.key_field, s.key) END
                -- Explicit type 50%: mostly right, sometimes capitalised,
                -- sometimes not one of the four, sometimes plainly wrong;
                -- entries mix: another 5% name the platform ("type":
                -- "instagram"), as link-in-bio tools write it.
                || CASE
                       WHEN s.f_type < 6 THEN jsonb_build_object('type', s.type)
                       WHEN s.f_type = 6 THEN jsonb_build_object('type', initcap(s.type))
                       WHEN s.f_type = 7 THEN jsonb_build_object('type', 'social')
                       WHEN s.f_type = 8 THEN jsonb_build_object('type', 'link')
                       WHEN s.f_type = 9 THEN jsonb_build_object('type', 'WEBSITE')
                       WHEN s.f_type = 10 AND '{{MIX}}' = 'entries' THEN
                           jsonb_build_object('type', s.key)
                       ELSE '{}'::jsonb
                   END
            ) FILTER (WHERE p.form = 4)
        ) AS arrays
    FROM (
        -- One row per value: the JSON value itself and its label.
        SELECT
            t.key,
            t.type,
            CASE t.tmpl
                WHEN '<number>' THEN to_jsonb(t.n % 100000)
                WHEN '<true>' THEN 'true'::jsonb
                WHEN '<null>' THEN 'null'::jsonb
                WHEN '<array>' THEN jsonb_build_array(format('https://www.example-%s.com/', t.site_n))
                WHEN '<long>' THEN to_jsonb(format('https://www.example-%s.com/', t.site_n) || repeat('a', 2100))
                -- Placeholders: %1$s a number < 100000, %2$s 7 digits,
                -- %3$s up to 9 digits, %4$s hex, %5$s a site number (the
                -- profile's own half of the time), %6$s a handle.
                ELSE to_jsonb(format(t.tmpl,
                    t.n % 100000,
                    lpad((t.n % 10000000)::text, 7, '0'),
                    t.n,
                    to_hex(t.n),
                    t.site_n,
                    (ARRAY['jane', 'john', 'alex', 'maria', 'sam', 'lee',
                           'nora', 'omar', 'yuki', 'zoe', 'ana', 'ben'])[1 + (t.n % 12)::int]
                    || (ARRAY['_doe', '.smith', '_films', '.actor', '',
                              '_official', '.dp', '_vfx'])[1 + (t.n / 12 % 8)::int]
                    || (t.n / 96 % 1000)))
            END AS val,
            -- Labels only exist in shapes 2 and 4; don't build them for the
            -- rest.
            CASE WHEN p.form NOT IN (2, 4) THEN NULL
                ELSE CASE floor(t.r_label * 20)::int
                    WHEN 8 THEN to_jsonb(t.usual_label)
                    WHEN 9 THEN to_jsonb(t.usual_label)
                    WHEN 10 THEN to_jsonb(t.usual_label)
                    WHEN 11 THEN to_jsonb(t.usual_label)
                    WHEN 12 THEN to_jsonb(t.usual_label)
                    WHEN 13 THEN to_jsonb(t.usual_label)
                    WHEN 14 THEN to_jsonb((ARRAY[
                        'My Website', 'Portfolio ✨', '🎬 Showreel', 'IMDb Page',
                        'Demo Reel 2023', 'Follow me 📸', 'Site perso', 'Página web',
                        'Mein Showreel', '作品集', 'Агентство', 'Réalisations'
                    ])[1 + (t.n % 12)::int])
                    WHEN 15 THEN '""'::jsonb
                    WHEN 16 THEN '"   "'::jsonb
                    WHEN 17 THEN to_jsonb('My personal ' || lower(t.usual_label)
                                          || ' with all my latest work, news and contact details')
                    WHEN 18 THEN to_jsonb(t.n % 100)
                    WHEN 19 THEN to_jsonb('  ' || t.usual_label || E'   \t my  link ')
                    ELSE NULL -- 0-7: no label (40%)
                END
            END AS label,
            t.r_field,
            -- Entry field names (shape 4; the label's also in shape 2), one
            -- array entry = 5%, drawn from successive digits of r_field (and
            -- of r_label for the label's).  URL: url 85%, href, link, URL
            -- 5% each; entries mix: url 50%, href 20%, link 15%, URL, Url,
            -- value 5% each.
            (CASE '{{MIX}}'
                WHEN 'entries' THEN ARRAY[
                    'url', 'url', 'url', 'url', 'url', 'url', 'url', 'url',
                    'url', 'url', 'href', 'href', 'href', 'href', 'link',
                    'link', 'link', 'URL', 'Url', 'value']
                ELSE ARRAY[
                    'url', 'url', 'url', 'url', 'url', 'url', 'url', 'url',
                    'url', 'url', 'url', 'url', 'url', 'url', 'url', 'url',
                    'url', 'href', 'link', 'URL']
            END)[1 + floor(t.r_field * 20)::int] AS url_field,
            -- Label: label; entries mix: label 50%, title 30%, name 15%,
            -- text 5%.
            CASE WHEN '{{MIX}}' <> 'entries' THEN 'label'
                ELSE (ARRAY[
                    'label', 'label', 'label', 'label', 'label', 'label',
                    'label', 'label', 'label', 'label', 'title', 'title',
                    'title', 'title', 'title', 'title', 'name', 'name', 'name',
                    'text'])[1 + floor(t.r_label * 400)::int % 20]
            END AS label_field,
            -- Key: platform 30%, key 10%, Platform 5%, none 55%; entries
            -- mix: platform 30%, network 15%, key, service, provider,
            -- Platform 5% each, none 35%.
            (CASE '{{MIX}}'
                WHEN 'entries' THEN ARRAY[
                    'platform', 'platform', 'platform', 'platform', 'platform',
                    'platform', 'network', 'network', 'network', 'key',
                    'service', 'provider', 'Platform', NULL, NULL, NULL, NULL,
                    NULL, NULL, NULL]
                ELSE ARRAY[
                    'platform', 'platform', 'platform', 'platform', 'platform',
                    'platform', 'key', 'key', 'Platform', NULL, NULL, NULL,
                    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL]
            END)[1 + floor(t.r_field * 400)::int % 20] AS key_field,
            floor(t.r_field * 8000)::int % 20 AS f_type
        FROM (
            -- Key, URL template and usual label, by kind.  The constant
            -- arrays list each choice as often as its weight (20 entries:
            -- one entry = 5% of that kind).
            SELECT
                k.n,
                k.site_n,
                k.r_label,
                k.r_field,
                (CASE k.kind
                    WHEN 'website' THEN ARRAY[
                        'website', 'website', 'website', 'website', 'website',
                        'website', 'website', 'website', 'Website', 'Website',
                        'site', 'homepage', ' web ', 'web', 'portfolio',
                        'portfolio', 'portfolio', 'Portfolio', 'WEBSITE',
                        'personal website']
                    WHEN 'imdb' THEN ARRAY[
                        'imdb', 'imdb', 'imdb', 'imdb', 'imdb', 'imdb', 'imdb',
                        'imdb', 'imdb', 'imdb', 'imdb', 'imdb', 'imdb', 'imdb',
                        'IMDB', 'IMDB', 'IMDB', 'IMDb', 'IMDb', 'imdb_url']
                    WHEN 'showreel' THEN ARRAY[
                        'showreel', 'showreel', 'showreel', 'showreel',
                        'showreel', 'showreel', 'showreel', 'showreel',
                        'Demo-Reel', 'Demo-Reel', 'Demo-Reel', 'reel', 'reel',
                        'reel', 'demo_reel', 'demo_reel', 'demoreel',
                        'Showreel ', 'vimeo', 'youtube']
                    WHEN 'instagram' THEN ARRAY[
                        'instagram', 'instagram', 'instagram', 'instagram',
                        'instagram', 'instagram', 'instagram', 'instagram',
                        'instagram', 'instagram', 'instagram', 'instagram',
                        'instagram', 'instagram', 'instagram', 'instagram',
                        'Instagram', 'Instagram', 'Instagram', 'insta']
                    WHEN 'twitter' THEN ARRAY[
                        'twitter', 'twitter', 'twitter', 'twitter', 'twitter',
                        'twitter', 'twitter', 'twitter', 'twitter', 'twitter',
                        'twitter', 'twitter', 'twitter', 'twitter', 'twitter',
                        'Twitter', 'Twitter', 'Twitter', 'x', 'twitter_handle']
                    WHEN 'linkedin' THEN ARRAY[
                        'linkedin', 'linkedin', 'linkedin', 'linkedin',
                        'linkedin', 'linkedin', 'linkedin', 'linkedin',
                        'linkedin', 'linkedin', 'linkedin', 'linkedin',
                        'linkedin', 'linkedin', 'linkedin', 'linkedin',
                        'LinkedIn', 'LinkedIn', 'LinkedIn', 'linked_in']
                    WHEN 'youtube' THEN ARRAY[
                        'youtube', 'youtube', 'youtube', 'youtube', 'youtube',
                        'youtube', 'youtube', 'youtube', 'youtube', 'youtube',
                        'youtube', 'youtube', 'youtube', 'youtube', 'youtube',
                        'youtube', 'youtube', 'YouTube', 'YouTube', 'YouTube']
                    WHEN 'vimeo' THEN ARRAY[
                        'vimeo', 'vimeo', 'vimeo', 'vimeo', 'vimeo', 'vimeo',
                        'vimeo', 'vimeo', 'vimeo', 'vimeo', 'vimeo', 'vimeo',
                        'vimeo', 'vimeo', 'vimeo', 'vimeo', 'vimeo', 'Vimeo',
                        'Vimeo', 'Vimeo']
                    WHEN 'dup' THEN ARRAY[
                        'homepage', 'homepage', 'site', 'site', 'web',
                        'Website', 'Website', 'WEBSITE', 'my site', 'blog',
                        'url', 'home', 'Homepage', 'portfolio',
                        'personal website', 'Web', 'website2', 'Site', 'www',
                        'link']
                    WHEN 'other' THEN ARRAY[
                        'blog', 'Blog', 'agent', 'Agent ', 'spotlight',
                        'backstage', 'linktree', 'Linktree', 'soundcloud',
                        'facebook', 'Facebook', 'tiktok', 'github', 'spotify',
                        'personal_site', 'my site', 'x', 'Casting Networks',
                        'fb', 'other']
                    ELSE ARRAY[ -- junk
                        'website', 'website', 'website', 'website', 'website',
                        'website', 'imdb', 'imdb', 'imdb', 'showreel',
                        'showreel', 'showreel', 'instagram', 'instagram',
                        'twitter', 'twitter', 'blog', 'linkedin', 'link', 'url']
                END)[1 + floor(k.r_key * 20)::int] AS key,
                (CASE k.kind
                    -- 20% without a scheme, 5% utm, some http, uppercase,
                    -- padding, IDN; %5$s is often the profile's own site.
                    WHEN 'website' THEN ARRAY[
                        'https://www.example-%5$s.com/',
                        'https://www.example-%5$s.com/',
                        'https://www.example-%5$s.com/',
                        'https://www.example-%5$s.com/',
                        'https://example-%5$s.com/',
                        'http://www.example-%5$s.com/',
                        'https://www.example-%5$s.com',
                        'www.example-%5$s.com',
                        'www.example-%5$s.com/',
                        'example-%5$s.com',
                        'https://WWW.Example-%5$s.COM/',
                        'https://www.example-%5$s.com/about',
                        'https://www.example-%5$s.com/portfolio/',
                        'https://www.example-%5$s.com/?utm_source=instagram&utm_medium=bio',
                        'https://bücher-%5$s.example/',
                        'https://www.example-%5$s.co.uk/',
                        '//www.example-%5$s.com/',
                        '  https://www.example-%5$s.com/  ',
                        'https://www.example-%5$s.com/work?id=%1$s',
                        'https://example-%5$s.squarespace.com/']
                    WHEN 'imdb' THEN ARRAY[
                        'https://www.imdb.com/name/nm%2$s/',
                        'https://www.imdb.com/name/nm%2$s/',
                        'https://www.imdb.com/name/nm%2$s/',
                        'https://www.imdb.com/name/nm%2$s/',
                        'https://www.imdb.com/name/nm%2$s/',
                        'https://www.imdb.com/name/nm%2$s/',
                        'https://www.imdb.com/name/nm%2$s/',
                        'https://www.imdb.com/name/nm%2$s/',
                        'https://www.imdb.com/name/nm%2$s/',
                        'https://www.imdb.com/name/nm%2$s',
                        'https://imdb.com/name/nm%2$s/',
                        'http://www.imdb.com/name/nm%2$s/',
                        'www.imdb.com/name/nm%2$s/',
                        'imdb.com/name/nm%2$s',
                        'https://m.imdb.com/name/nm%2$s/',
                        'https://www.imdb.com/name/nm%2$s/?ref_=fn_al_nm_1',
                        'https://www.imdb.com/name/nm%2$s/?utm_source=share&utm_medium=web',
                        'https://pro.imdb.com/name/nm%2$s/',
                        'https://www.imdb.com/title/tt%2$s/',
                        'IMDB.com/name/nm%2$s']
                    WHEN 'showreel' THEN ARRAY[
                        'https://vimeo.com/%3$s',
                        'https://vimeo.com/%3$s',
                        'https://vimeo.com/%3$s',
                        'https://vimeo.com/%3$s',
                        'https://vimeo.com/%3$s',
                        'https://vimeo.com/%3$s',
                        'https://vimeo.com/%3$s/',
                        'http://vimeo.com/%3$s',
                        'https://player.vimeo.com/video/%3$s',
                        'https://vimeo.com/%3$s?share=copy',
                        'https://www.youtube.com/watch?v=%4$s',
                        'https://www.youtube.com/watch?v=%4$s',
                        'https://www.youtube.com/watch?v=%4$s',
                        'https://youtu.be/%4$s',
                        'https://www.youtube.com/watch?v=%4$s&t=30s',
                        'vimeo.com/%3$s',
                        'https://www.dropbox.com/s/%4$s/showreel.mp4?dl=0',
                        'https://drive.google.com/file/d/%4$s/view',
                        'https://vimeo.com/%3$s#t=12s',
                        'https://www.example-%5$s.com/reel']
                    -- Bare handles (with or without @) are 35% here, 30% for
                    -- twitter, 15% for youtube: about 5% of all values.
                    WHEN 'instagram' THEN ARRAY[
                        'https://www.instagram.com/%6$s/',
                        'https://www.instagram.com/%6$s/',
                        'https://www.instagram.com/%6$s/',
                        'https://www.instagram.com/%6$s/',
                        'https://www.instagram.com/%6$s/',
                        'https://www.instagram.com/%6$s/',
                        'https://www.instagram.com/%6$s/',
                        'https://instagram.com/%6$s',
                        'http://instagram.com/%6$s/',
                        'instagram.com/%6$s',
                        'https://www.instagram.com/%6$s/?hl=en',
                        'https://www.instagram.com/%6$s?igshid=%4$s',
                        '@%6$s', '@%6$s', '@%6$s', '@%6$s', '@%6$s',
                        '%6$s', '%6$s',
                        'https://www.instagram.com/%6$s/?hl=de']
                    WHEN 'twitter' THEN ARRAY[
                        'https://twitter.com/%6$s',
                        'https://twitter.com/%6$s',
                        'https://twitter.com/%6$s',
                        'https://twitter.com/%6$s',
                        'https://twitter.com/%6$s',
                        'https://twitter.com/%6$s',
                        'https://twitter.com/%6$s',
                        'https://x.com/%6$s',
                        'https://x.com/%6$s',
                        'twitter.com/%6$s',
                        'https://mobile.twitter.com/%6$s',
                        'https://twitter.com/%6$s/',
                        '@%6$s', '@%6$s', '@%6$s', '@%6$s', '@%6$s',
                        '%6$s',
                        'http://www.twitter.com/%6$s',
                        'https://twitter.com/%6$s?lang=en']
                    WHEN 'linkedin' THEN ARRAY[
                        'https://www.linkedin.com/in/%6$s/',
                        'https://www.linkedin.com/in/%6$s/',
                        'https://www.linkedin.com/in/%6$s/',
                        'https://www.linkedin.com/in/%6$s/',
                        'https://www.linkedin.com/in/%6$s/',
                        'https://www.linkedin.com/in/%6$s/',
                        'https://www.linkedin.com/in/%6$s/',
                        'https://www.linkedin.com/in/%6$s/',
                        'https://www.linkedin.com/in/%6$s/',
                        'https://www.linkedin.com/in/%6$s/',
                        'https://www.linkedin.com/in/%6$s/',
                        'https://www.linkedin.com/in/%6$s/',
                        'https://linkedin.com/in/%6$s',
                        'https://linkedin.com/in/%6$s',
                        'linkedin.com/in/%6$s',
                        'linkedin.com/in/%6$s',
                        'https://www.linkedin.com/in/%6$s?trk=public_profile',
                        'https://uk.linkedin.com/in/%6$s',
                        'http://www.linkedin.com/in/%6$s/',
                        'www.linkedin.com/in/%6$s']
                    WHEN 'youtube' THEN ARRAY[
                        'https://www.youtube.com/@%6$s',
                        'https://www.youtube.com/@%6$s',
                        'https://www.youtube.com/@%6$s',
                        'https://www.youtube.com/@%6$s',
                        'https://www.youtube.com/@%6$s',
                        'https://www.youtube.com/@%6$s',
                        'https://www.youtube.com/@%6$s',
                        'https://www.youtube.com/channel/UC%4$s',
                        'https://www.youtube.com/channel/UC%4$s',
                        'https://www.youtube.com/channel/UC%4$s',
                        'https://www.youtube.com/channel/UC%4$s',
                        '@%6$s', '@%6$s', '@%6$s',
                        'https://youtube.com/c/%6$s',
                        'https://youtube.com/c/%6$s',
                        'https://www.youtube.com/user/%6$s',
                        'youtube.com/@%6$s',
                        'https://m.youtube.com/@%6$s',
                        'https://www.youtube.com/watch?v=%4$s']
                    WHEN 'vimeo' THEN ARRAY[
                        'https://vimeo.com/%6$s',
                        'https://vimeo.com/%6$s',
                        'https://vimeo.com/%6$s',
                        'https://vimeo.com/%6$s',
                        'https://vimeo.com/%6$s',
                        'https://vimeo.com/%6$s',
                        'https://vimeo.com/%6$s',
                        'https://vimeo.com/%6$s',
                        'https://vimeo.com/%6$s',
                        'https://vimeo.com/%6$s',
                        'https://vimeo.com/%6$s',
                        'https://vimeo.com/%6$s',
                        'https://vimeo.com/%3$s',
                        'https://vimeo.com/%3$s',
                        'https://vimeo.com/%3$s',
                        'https://vimeo.com/%3$s',
                        'https://vimeo.com/%3$s',
                        'vimeo.com/%6$s',
                        'vimeo.com/%6$s',
                        'https://vimeo.com/user%3$s']
                    -- The profile's own site again: every entry has the same
                    -- comparison key as the first 11 website templates.
                    WHEN 'dup' THEN ARRAY[
                        'https://www.example-%5$s.com',
                        'https://www.example-%5$s.com/',
                        'http://www.example-%5$s.com/',
                        'http://example-%5$s.com',
                        'https://example-%5$s.com/',
                        'https://WWW.EXAMPLE-%5$s.COM/',
                        'HTTPS://www.example-%5$s.com/',
                        'https://www.Example-%5$s.com',
                        'www.example-%5$s.com',
                        'www.example-%5$s.com/',
                        'example-%5$s.com/',
                        'https://www.example-%5$s.com/?utm_source=linktree',
                        'https://www.example-%5$s.com/#contact',
                        'https://www.example-%5$s.com:443/',
                        'http://www.example-%5$s.com:80',
                        ' https://www.example-%5$s.com/ ',
                        'https://www.EXAMPLE-%5$s.com/',
                        'https://example-%5$s.com',
                        'www.EXAMPLE-%5$s.com',
                        '//example-%5$s.com/']
                    WHEN 'other' THEN ARRAY[
                        'https://blog.example-%1$s.com/',
                        'https://example-%1$s.wordpress.com/',
                        'https://www.spotlight.com/%2$s',
                        'https://www.spotlight.com/%2$s?tab=credits',
                        'https://linktr.ee/%6$s',
                        'https://linktr.ee/%6$s',
                        'https://soundcloud.com/%6$s',
                        'https://www.facebook.com/%6$s',
                        'https://facebook.com/profile.php?id=%3$s&fbclid=%4$s',
                        'https://www.tiktok.com/@%6$s',
                        'https://github.com/%6$s',
                        'https://open.spotify.com/artist/%4$s',
                        'https://www.backstage.com/u/%6$s/',
                        'https://medium.com/@%6$s',
                        'https://www.müller-%1$s.de/',
                        'https://例え-%1$s.jp/',
                        'https://agency-%1$s.example.com/clients/%6$s',
                        'https://www.castingnetworks.com/%6$s',
                        'https://example-%1$s.com:8443/portfolio',
                        'https://www.example-%1$s.com/path/../reel/./index.html']
                    -- Junk: every reject reason of SPEC §2-§3 appears; the
                    -- '<…>' sentinels become non-string JSON values above.
                    ELSE ARRAY[
                        'not a url', 'javascript:alert(1)', 'http://localhost/',
                        'https://1.2.3.4/', '', '   ', '<number>',
                        'mailto:jane@example-%1$s.com',
                        'ftp://files.example-%1$s.com/reel.mov',
                        'https://user:secret@example-%1$s.com/',
                        'http://[::1]/', 'https://example', 'N/A', 'TBD',
                        'https://', '<long>', '<true>', '<null>', '<array>',
                        'see my website']
                END)[1 + floor(k.r_tmpl * k.n_tmpl)::int] AS tmpl,
                CASE k.kind
                    WHEN 'website' THEN 'website'
                    WHEN 'dup' THEN 'website'
                    WHEN 'imdb' THEN 'imdb'
                    WHEN 'showreel' THEN 'showreel'
                    ELSE 'other'
                END AS type,
                CASE k.kind
                    WHEN 'website' THEN 'Website'
                    WHEN 'dup' THEN 'Website'
                    WHEN 'imdb' THEN 'IMDb'
                    WHEN 'showreel' THEN 'Showreel'
                    WHEN 'instagram' THEN 'Instagram'
                    WHEN 'twitter' THEN 'Twitter'
                    WHEN 'linkedin' THEN 'LinkedIn'
                    WHEN 'youtube' THEN 'YouTube'
                    WHEN 'vimeo' THEN 'Vimeo'
                    ELSE 'Link'
                END AS usual_label
            FROM (
                SELECT
                    CASE
                        -- A duplicating profile starts with its own site in
                        -- a plain spelling and ends with another spelling.
                        WHEN p.has_dup AND j = 1 THEN 'website'
                        WHEN p.has_dup AND j = p.n_values THEN 'dup'
                        WHEN r_kind < 0.300 THEN 'website'
                        WHEN r_kind < 0.480 THEN 'imdb'
                        WHEN r_kind < 0.600 THEN 'showreel'
                        WHEN r_kind < 0.680 THEN 'instagram'
                        WHEN r_kind < 0.735 THEN 'twitter'
                        WHEN r_kind < 0.780 THEN 'linkedin'
                        WHEN r_kind < 0.802 THEN 'youtube'
                        WHEN r_kind < 0.824 THEN 'vimeo'
                        WHEN r_kind < 0.970 THEN 'other'
                        ELSE 'junk'
                    END AS kind,
                    floor(r_num * 1e9)::bigint AS n,
                    -- Half of the sites are the profile's own, so that two
                    -- website values of a profile sometimes meet by chance.
                    CASE WHEN p.has_dup OR r_site < 0.5 THEN p.site
                         ELSE floor(r_num * 1e9)::int % 100000 END AS site_n,
                    -- The first value of a duplicating profile uses only the
                    -- website templates that are the bare site (the first 11).
                    CASE WHEN p.has_dup AND j = 1 THEN 11 ELSE 20 END AS n_tmpl,
                    r_key, r_tmpl, r_label, r_field
                FROM (
                    -- Every random() of a value, in one fixed order.
                    SELECT j, random() AS r_kind, random() AS r_key,
                           random() AS r_tmpl, random() AS r_num,
                           random() AS r_site, random() AS r_label,
                           random() AS r_field
                    FROM generate_series(1, p.n_values) AS g(j)
                ) AS r
                OFFSET 0
            ) AS k
            OFFSET 0
        ) AS t
    ) AS s
) AS v;

-- About 3% of users already created 1 or 2 links through the new API.
-- This pass reads profiles back, and a heap scan's row order is not
-- guaranteed (synchronized seq scans), so no random() here: every choice is
-- a hash of (profile id, seed), the same whatever order rows come in.
-- The first link is, for about half of them, the profile's own site or IMDb
-- page in the canonical form the API stores (deduplication against existing
-- rows then matters), else a link absent from the legacy data; the second,
-- for a third of them, a showreel.
INSERT INTO profile_links
    (id, "userId", "profileId", label, url, type, position, "createdAt", "updatedAt")
SELECT
    CASE '{{IDS}}'
        WHEN 'uuid' THEN overlay(overlay(md5('l' || u.id || '-' || k.position)
                                         PLACING '4' FROM 13) PLACING '8' FROM 17)::uuid::text
        ELSE 'ul' || substr(u.id, 3) || '-' || k.position
    END,
    u."userId",
    u.id,
    k.label,
    k.url,
    k.type,
    k.position,
    TIMESTAMP '2024-01-01 00:00:00',
    TIMESTAMP '2024-01-01 00:00:00'
FROM (
    SELECT
        p.id,
        p."userId",
        h,
        substring(p."socialLinks"::text FROM 'example-([0-9]+)\.com') AS legacy_site,
        substring(p."socialLinks"::text FROM 'imdb\.com/name/nm([0-9]{7})') AS legacy_imdb
    FROM (
        SELECT p.*,
               ('x' || substr(md5(p.id || '/' || ({{SEED}})::text), 1, 8))::bit(32)::bigint AS h
        FROM profiles AS p
    ) AS p
    WHERE h % 1000 < 30
) AS u
CROSS JOIN LATERAL (
    SELECT 0 AS position,
           CASE WHEN u.legacy_site IS NOT NULL AND u.h % 2 = 0 THEN 'Website'
                WHEN u.legacy_imdb IS NOT NULL AND u.h % 2 = 0 THEN 'IMDb Profile'
                ELSE 'Linktree' END AS label,
           CASE WHEN u.legacy_site IS NOT NULL AND u.h % 2 = 0
                    THEN 'https://www.example-' || u.legacy_site || '.com/'
                WHEN u.legacy_imdb IS NOT NULL AND u.h % 2 = 0
                    THEN 'https://www.imdb.com/name/nm' || u.legacy_imdb || '/'
                ELSE 'https://linktr.ee/user' || (u.h % 100000) END AS url,
           CASE WHEN u.legacy_site IS NOT NULL AND u.h % 2 = 0 THEN 'website'
                WHEN u.legacy_imdb IS NOT NULL AND u.h % 2 = 0 THEN 'imdb'
                ELSE 'other' END AS type
    UNION ALL
    SELECT 1, 'Showreel', 'https://vimeo.com/' || (u.h / 7 % 1000000000), 'showreel'
    WHERE u.h / 1000 % 3 = 0
) AS k;

ANALYZE users, profiles, profile_links;
