"""Configuration validation: every problem names its key path, and all are reported at once."""

from __future__ import annotations

import dataclasses
import os
import re
import typing

import yaml
from twisted.trial.unittest import SkipTest, SynchronousTestCase

import tests
from mailbox_appliance.config import (
    ENV_VAR,
    IMPLICIT_TLS,
    SERVICES,
    Config,
    ConfigError,
    load_config,
    parse_config,
    parse_size,
)
from mailbox_appliance.tls import generate_self_signed
from tests.support.config import config_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(tests.__file__)))
SAMPLE = os.path.join(REPO, "etc", "appliance.yaml")


class _ConfigTestCase(SynchronousTestCase):
    def data_dir(self) -> str:
        path = self.mktemp()
        os.makedirs(path)
        return path

    def data(self, **overrides) -> dict:
        """A valid YAML-shaped config with a real data dir, plus ``overrides``."""
        data_dir = overrides.pop("data_dir") if "data_dir" in overrides else self.data_dir()
        return config_data(data_dir, **overrides)

    def errors_of(self, data: object) -> list[str]:
        with self.assertRaises(ConfigError) as caught:
            parse_config(data)
        return caught.exception.errors

    def assertError(self, data: object, path: str, *fragments: str) -> str:
        """``data`` is refused with exactly one error, naming ``path``; returns the error."""
        errors = self.errors_of(data)
        self.assertEqual(len(errors), 1, errors)
        (error,) = errors
        self.assertTrue(error.startswith(f"{path}: "), error)
        for fragment in fragments:
            self.assertIn(fragment, error)
        self.assertNotIn("\n", error)
        return error

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path


class KeyTests(_ConfigTestCase):
    def test_unknown_top_level_key_names_itself_and_the_known_keys(self):
        self.assertError(self.data(data_dirr="./x"), "data_dirr", "unknown key", "data_dir")

    def test_unknown_nested_key_names_its_dotted_path(self):
        self.assertError(self.data(tls={"cert": None, "key": None, "chain": "x"}), "tls.chain")

    def test_unknown_key_two_levels_down_names_its_dotted_path(self):
        data = self.data()
        data["auth"]["password_hash"]["rounds"] = 3
        self.assertError(data, "auth.password_hash.rounds", "unknown key", "time_cost")

    def test_source_is_not_a_yaml_key(self):
        self.assertError(self.data(source="/etc/x.yaml"), "source", "unknown key")

    def test_empty_document_gives_the_defaults(self):
        config = parse_config({})
        self.assertEqual(config.data_dir, os.path.abspath("./var"))
        self.assertIsNone(config.database)
        self.assertEqual(config.quota.default, 1024**3)
        self.assertEqual(config.auth.password_hash.memory_kib, 65536)

    def test_null_section_keeps_its_defaults(self):
        config = parse_config(self.data(storage=None))
        self.assertEqual(config.storage.gc_interval, 300)
        self.assertEqual(config.storage.reader_threads, 4)


class TypeTests(_ConfigTestCase):
    def test_integer_given_a_string_says_an_integer_was_expected(self):
        self.assertError(
            self.data(storage={"gc_interval": "soon"}), "storage.gc_interval", "an integer", "soon"
        )

    def test_string_given_a_list_says_a_string_was_expected(self):
        self.assertError(self.data(storage={"hot_path": ["a"]}), "storage.hot_path", "string")

    def test_string_given_an_integer_is_refused(self):
        self.assertError(self.data(hostname=5), "hostname", "string")

    def test_boolean_is_not_an_integer(self):
        self.assertError(self.data(auth={"hash_threads": True}), "auth.hash_threads", "integer")

    def test_boolean_is_not_a_string(self):
        self.assertError(self.data(hostname=True), "hostname", "string")

    def test_mapping_given_a_scalar_says_a_mapping_was_expected(self):
        self.assertError(self.data(auth=3), "auth", "expected a mapping")

    def test_nested_mapping_given_a_list_names_its_path(self):
        data = self.data()
        data["auth"]["password_hash"] = [1, 2]
        self.assertError(data, "auth.password_hash", "expected a mapping")

    def test_document_that_is_not_a_mapping_is_refused(self):
        self.assertError(["hostname"], "config", "expected a mapping")

    def test_negative_integer_is_refused(self):
        self.assertError(self.data(storage={"gc_grace": -1}), "storage.gc_grace", "zero or more")

    def test_null_for_a_required_string_is_refused(self):
        self.assertError(self.data(hostname=None), "hostname", "non-empty string", "got null")

    def test_null_for_an_integer_is_refused(self):
        self.assertError(self.data(storage={"gc_interval": None}), "storage.gc_interval")

    def test_empty_string_is_refused(self):
        self.assertError(self.data(data_dir=""), "data_dir", "non-empty string")

    def test_null_where_allowed_means_the_default(self):
        config = parse_config(self.data(database=None, tls={"cert": None, "key": None}))
        self.assertIsNone(config.database)
        self.assertTrue(config.database_url.startswith("sqlite:///"))
        self.assertEqual(config.tls_cert_path, os.path.join(config.data_dir, "tls", "cert.pem"))

    def test_inline_max_above_one_writer_chunk_is_refused(self):
        self.assertError(
            self.data(storage={"inline_max": "1 MiB"}), "storage.inline_max", "256 KiB"
        )
        config = parse_config(self.data(storage={"inline_max": "256 KiB"}))
        self.assertEqual(config.storage.inline_max, 256 * 1024)

    def test_thread_counts_below_one_are_refused(self):
        errors = self.errors_of(
            self.data(storage={"reader_threads": 0, "blob_threads": 0}, auth={"hash_threads": 0})
        )
        self.assertEqual(
            sorted(e.split(":")[0] for e in errors),
            ["auth.hash_threads", "storage.blob_threads", "storage.reader_threads"],
        )


class ListenTests(_ConfigTestCase):
    def test_bad_endpoint_string_names_the_list_item(self):
        self.assertError(
            self.data(listen={"smtp": ["tcp:notaport"]}), "listen.smtp[0]", "'tcp:notaport'"
        )

    def test_bad_second_endpoint_names_index_one(self):
        self.assertError(
            self.data(listen={"imap": ["tcp:10143", "nosuchtype:1"]}), "listen.imap[1]", "nosuch"
        )

    def test_endpoint_that_is_not_a_string_is_refused(self):
        self.assertError(self.data(listen={"smtp": [25]}), "listen.smtp[0]", "endpoint string")

    def test_unknown_service_under_listen_names_its_path(self):
        self.assertError(
            self.data(listen={"smtpp": ["tcp:25"]}), "listen.smtpp", "unknown service", "smtp"
        )

    def test_service_given_a_scalar_is_refused(self):
        self.assertError(self.data(listen={"pop3": 7}), "listen.pop3", "list")

    def test_listen_given_a_list_is_refused(self):
        self.assertError(self.data(listen=["tcp:25"]), "listen", "mapping")

    def test_empty_list_turns_a_service_off(self):
        config = parse_config({"listen": {"smtp": []}})
        self.assertEqual(config.listen["smtp"], ())
        self.assertEqual(config.listen["imap"], ("tcp:10143:interface=127.0.0.1",))

    def test_null_turns_a_service_off(self):
        self.assertEqual(parse_config({"listen": {"pop3": None}}).listen["pop3"], ())

    def test_absent_service_key_keeps_its_default(self):
        config = parse_config({"listen": {"smtp": ["tcp:2525:interface=127.0.0.1"]}})
        self.assertEqual(config.listen["smtp"], ("tcp:2525:interface=127.0.0.1",))
        self.assertEqual(config.listen["submissions"], ("tcp:10465:interface=127.0.0.1",))
        self.assertEqual(set(config.listen), set(SERVICES))

    def test_defaults_are_the_standard_ports_plus_10000_on_loopback(self):
        listen = parse_config({}).listen
        self.assertEqual(listen["smtp"], ("tcp:10025:interface=127.0.0.1",))
        self.assertEqual(listen["imaps"], ("tcp:10993:interface=127.0.0.1",))
        self.assertEqual(listen["admin"], ("tcp:10081:interface=127.0.0.1",))
        for service in SERVICES:
            self.assertIn("interface=127.0.0.1", listen[service][0], service)

    def test_single_string_endpoint_is_a_one_item_list(self):
        config = parse_config({"listen": {"imap": "tcp:1143"}})
        self.assertEqual(config.listen["imap"], ("tcp:1143",))

    def test_several_endpoints_per_service_are_kept_in_order(self):
        endpoints = ["tcp:25:interface=127.0.0.1", "tcp6:25:interface=\\:\\:1"]
        config = parse_config({"listen": {"smtp": endpoints}})
        self.assertEqual(config.listen["smtp"], tuple(endpoints))

    def test_haproxy_endpoint_is_accepted(self):
        config = parse_config({"listen": {"smtp": ["haproxy:tcp:25:interface=127.0.0.1"]}})
        self.assertEqual(config.listen["smtp"], ("haproxy:tcp:25:interface=127.0.0.1",))

    def test_implicit_tls_services_are_known_services(self):
        self.assertEqual(IMPLICIT_TLS, {"submissions", "imaps", "pop3s", "https"})
        self.assertTrue(IMPLICIT_TLS <= set(SERVICES))

    def test_listen_mapping_is_immutable(self):
        config = parse_config({})
        with self.assertRaises(TypeError):
            config.listen["smtp"] = ()  # type: ignore[index]
        with self.assertRaises(dataclasses.FrozenInstanceError):
            config.hostname = "x"  # type: ignore[misc]


class SizeTests(_ConfigTestCase):
    def test_binary_units(self):
        self.assertEqual(parse_config({"quota": {"default": "64 MiB"}}).quota.default, 64 * 2**20)

    def test_plain_integer_is_bytes(self):
        self.assertEqual(parse_config({"quota": {"default": 1048576}}).quota.default, 1048576)

    def test_decimal_units_without_a_space(self):
        self.assertEqual(parse_config({"quota": {"default": "2GB"}}).quota.default, 2 * 10**9)

    def test_units_ignore_case_and_fractions_are_allowed(self):
        self.assertEqual(parse_size("1.5 kib"), 1536)
        self.assertEqual(parse_size("3 TiB"), 3 * 2**40)
        self.assertEqual(parse_size("10"), 10)

    def test_bad_size_names_its_path(self):
        self.assertError(self.data(quota={"default": "2 parsecs"}), "quota.default", "64 MiB")

    def test_negative_size_is_refused(self):
        self.assertError(self.data(quota={"default": -1}), "quota.default", "zero or more")

    def test_boolean_is_not_a_size(self):
        self.assertError(self.data(quota={"default": True}), "quota.default")

    def test_null_is_not_a_size(self):
        self.assertError(self.data(quota={"default": None}), "quota.default")

    def test_parse_size_refuses_garbage(self):
        for value in ("", "MiB", "1 2 MiB", "-5", [1], 1.5):
            with self.subTest(value=value):
                self.assertRaises(ValueError, parse_size, value)


class TLSConfigTests(_ConfigTestCase):
    def pair(self, hostname: str = "mail.example.test") -> tuple[str, str]:
        directory = os.path.abspath(self.mktemp())
        cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        generate_self_signed(cert, key, hostname)
        return cert, key

    def test_real_pair_is_accepted(self):
        cert, key = self.pair()
        config = parse_config(self.data(tls={"cert": cert, "key": key}))
        self.assertEqual((config.tls_cert_path, config.tls_key_path), (cert, key))

    def test_cert_without_key_is_refused(self):
        cert, _ = self.pair()
        self.assertError(self.data(tls={"cert": cert}), "tls", "both cert and key")

    def test_key_without_cert_is_refused(self):
        _, key = self.pair()
        self.assertError(self.data(tls={"key": key}), "tls", "both cert and key")

    def test_missing_cert_file_names_tls_cert(self):
        _, key = self.pair()
        missing = os.path.abspath("no-such-cert.pem")
        self.assertError(self.data(tls={"cert": missing, "key": key}), "tls.cert", missing)

    def test_unreadable_cert_file_names_tls_cert(self):
        if os.geteuid() == 0:
            raise SkipTest("running as root: file modes do not stop root from reading")
        cert, key = self.pair()
        os.chmod(cert, 0)
        self.addCleanup(os.chmod, cert, 0o644)
        self.assertError(self.data(tls={"cert": cert, "key": key}), "tls.cert", "cannot read")

    def test_directory_as_cert_names_tls_cert(self):
        _, key = self.pair()
        directory = self.data_dir()
        self.assertError(self.data(tls={"cert": directory, "key": key}), "tls.cert", "cannot read")

    def test_missing_key_file_names_tls_key(self):
        cert, _ = self.pair()
        self.assertError(self.data(tls={"cert": cert, "key": cert + ".missing"}), "tls.key")

    def test_cert_and_key_that_do_not_match_are_refused(self):
        cert, _ = self.pair()
        _, other_key = self.pair()
        self.assertError(
            self.data(tls={"cert": cert, "key": other_key}), "tls.key", "does not belong"
        )

    def test_cert_that_is_not_pem_names_tls_cert(self):
        _, key = self.pair()
        garbage = self.write("this is not a certificate\n")
        self.assertError(
            self.data(tls={"cert": garbage, "key": key}), "tls.cert", "not a PEM certificate"
        )

    def test_key_file_given_as_cert_names_tls_cert(self):
        _, key = self.pair()
        self.assertError(self.data(tls={"cert": key, "key": key}), "tls.cert")

    def test_key_that_is_not_pem_names_tls_key(self):
        cert, _ = self.pair()
        self.assertError(
            self.data(tls={"cert": cert, "key": cert}), "tls.key", "not an unencrypted PEM"
        )


class DatabaseAndPathTests(_ConfigTestCase):
    def test_unsupported_database_url_scheme_is_refused(self):
        self.assertError(self.data(database="mysql://u:p@db.example/mail"), "database", "sqlite")

    def test_database_that_is_not_a_url_is_refused(self):
        self.assertError(self.data(database="::not a url::"), "database", "SQLAlchemy URL")

    def test_sqlite_and_postgresql_urls_are_accepted(self):
        for url in ("sqlite:////srv/mail/db.sqlite3", "postgresql+psycopg://mail@db.example/mail"):
            with self.subTest(url=url):
                config = parse_config(self.data(database=url))
                self.assertEqual(config.database_url, url)

    def test_default_database_is_sqlite_in_the_data_dir(self):
        config = parse_config(self.data())
        self.assertEqual(
            config.database_url, "sqlite:///" + os.path.join(config.data_dir, "appliance.sqlite3")
        )

    def test_data_dir_that_is_a_file_is_refused(self):
        path = self.write("not a directory\n")
        self.assertError(self.data(data_dir=path), "data_dir", "not a directory")

    def test_data_dir_that_does_not_exist_yet_is_fine(self):
        path = os.path.abspath(self.mktemp())
        self.assertEqual(parse_config(self.data(data_dir=path)).data_dir, path)
        self.assertFalse(os.path.exists(path), "validation must not create the data dir")

    def test_relative_data_dir_becomes_absolute_against_the_current_directory(self):
        config = parse_config({"data_dir": "relative/var", "storage": {"hot_path": "hot"}})
        self.assertEqual(config.data_dir, os.path.join(os.getcwd(), "relative", "var"))
        self.assertEqual(config.hot_blob_path, os.path.join(os.getcwd(), "hot"))

    def test_relative_tls_paths_become_absolute_against_the_current_directory(self):
        directory = os.path.abspath(self.mktemp())
        cert, key = os.path.join(directory, "c.pem"), os.path.join(directory, "k.pem")
        generate_self_signed(cert, key, "mail.example.test")
        here = os.getcwd()
        os.chdir(directory)
        self.addCleanup(os.chdir, here)
        config = parse_config(self.data(tls={"cert": "c.pem", "key": "k.pem"}))
        self.assertEqual((config.tls.cert, config.tls.key), (cert, key))

    def test_hot_path_defaults_under_the_data_dir(self):
        config = parse_config({"data_dir": "/srv/mail"})
        self.assertEqual(config.hot_blob_path, "/srv/mail/blobs/hot")


class AllAtOnceTests(_ConfigTestCase):
    def test_several_errors_are_reported_at_once_in_one_config_error(self):
        data = self.data(
            hostname=5,
            data_dirr="x",
            listen={"smtpp": ["tcp:25"], "smtp": ["tcp:notaport"]},
            storage={"gc_interval": "soon"},
            auth=3,
            quota={"default": "lots"},
        )
        errors = self.errors_of(data)
        paths = sorted(e.split(": ", 1)[0] for e in errors)
        self.assertEqual(
            paths,
            [
                "auth",
                "data_dirr",
                "hostname",
                "listen.smtp[0]",
                "listen.smtpp",
                "quota.default",
                "storage.gc_interval",
            ],
        )

    def test_file_checks_are_reported_together_with_type_errors(self):
        data = self.data(
            hostname=5,
            database="mysql://db.example.test/mail",
            tls={"cert": "/nonexistent/cert.pem", "key": "/nonexistent/key.pem"},
        )
        paths = sorted(e.split(": ", 1)[0] for e in self.errors_of(data))
        self.assertEqual(paths, ["database", "hostname", "tls.cert"])

    def test_a_section_with_a_type_error_skips_its_own_file_checks(self):
        data = self.data(tls={"cert": 5, "key": "/nonexistent/key.pem"})
        self.assertError(data, "tls.cert", "expected a non-empty string, got 5")

    def test_config_error_message_is_one_line_per_error(self):
        with self.assertRaises(ConfigError) as caught:
            parse_config({"hostname": 1, "data_dir": 2})
        self.assertEqual(str(caught.exception).split("\n"), caught.exception.errors)
        self.assertEqual(len(caught.exception.errors), 2)


class LoadConfigTests(_ConfigTestCase):
    def test_path_is_read_and_recorded_as_source(self):
        path = self.write(yaml.safe_dump(self.data(hostname="one.example.test")))
        config = load_config(path, environ={})
        self.assertEqual(config.hostname, "one.example.test")
        self.assertEqual(config.source, os.path.abspath(path))

    def test_environment_variable_is_used_when_no_path_is_given(self):
        path = self.write(yaml.safe_dump(self.data(hostname="env.example.test")))
        config = load_config(None, environ={ENV_VAR: path})
        self.assertEqual(config.hostname, "env.example.test")
        self.assertEqual(config.source, os.path.abspath(path))

    def test_explicit_path_wins_over_the_environment_variable(self):
        env = self.write(yaml.safe_dump(self.data(hostname="env.example.test")))
        explicit = self.write(yaml.safe_dump(self.data(hostname="explicit.example.test")))
        config = load_config(explicit, environ={ENV_VAR: env})
        self.assertEqual(config.hostname, "explicit.example.test")

    def test_no_path_and_no_variable_gives_built_in_defaults(self):
        config = load_config(None, environ={})
        self.assertIsNone(config.source)
        self.assertEqual(config, parse_config({}))

    def test_empty_environment_variable_means_built_in_defaults(self):
        self.assertIsNone(load_config(None, environ={ENV_VAR: ""}).source)

    def test_empty_file_gives_the_defaults(self):
        config = load_config(self.write(""), environ={})
        self.assertEqual(dataclasses.replace(config, source=None), parse_config({}))

    def test_missing_file_is_a_config_error_naming_the_file(self):
        path = os.path.abspath("does-not-exist.yaml")
        with self.assertRaises(ConfigError) as caught:
            load_config(path, environ={})
        (error,) = caught.exception.errors
        self.assertTrue(error.startswith(f"{path}: "), error)
        self.assertIn("cannot read", error)

    def test_unreadable_file_is_a_config_error_naming_the_file(self):
        directory = self.data_dir()  # reading a directory fails for root too
        with self.assertRaises(ConfigError) as caught:
            load_config(directory, environ={})
        (error,) = caught.exception.errors
        self.assertTrue(error.startswith(f"{directory}: cannot read"), error)

    def test_invalid_yaml_is_one_config_error_line_naming_the_file(self):
        path = self.write("listen: [\n  smtp: {\n")
        with self.assertRaises(ConfigError) as caught:
            load_config(path, environ={})
        (error,) = caught.exception.errors
        self.assertTrue(error.startswith(f"{path}: not valid YAML"), error)
        self.assertNotIn("\n", error)
        self.assertIn("line", error)

    def test_errors_in_a_file_name_their_key_paths(self):
        path = self.write("hostname: mail.example.test\nlisten:\n  smtpp: []\n")
        with self.assertRaises(ConfigError) as caught:
            load_config(path, environ={})
        self.assertEqual(caught.exception.errors[0].split(":")[0], "listen.smtpp")


def _yaml_keys(cls: type) -> list[str]:
    """Every YAML key path that dataclass ``cls`` accepts (services included)."""
    hints = typing.get_type_hints(cls)
    paths = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        paths.append(f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            paths.extend(f"{f.name}.{sub}" for sub in _yaml_keys(hints[f.name]))
        elif f.name == "listen" and cls is Config:
            paths.extend(f"listen.{service}" for service in SERVICES)
    return paths


class SampleConfigTests(SynchronousTestCase):
    """etc/appliance.yaml documents every key with its default, so it cannot fall behind."""

    def setUp(self):
        with open(SAMPLE, encoding="utf-8") as f:
            self.text = f.read()
        self.document = yaml.safe_load(self.text)

    def test_sample_loads_cleanly(self):
        config = load_config(SAMPLE, environ={})
        self.assertEqual(config.source, os.path.abspath(SAMPLE))

    def test_sample_names_every_key_of_the_config_dataclasses(self):
        missing = []
        for path in _yaml_keys(Config):
            node = self.document
            for part in path.split("."):
                if not isinstance(node, dict) or part not in node:
                    missing.append(path)
                    break
                node = node[part]
        self.assertEqual(missing, [])

    def test_every_key_in_the_sample_has_a_comment(self):
        lines = self.text.splitlines()
        uncommented = []
        for path in _yaml_keys(Config):
            key = path.rsplit(".", 1)[-1]
            pattern = re.compile(rf"^\s*{re.escape(key)}:")
            for i, line in enumerate(lines):
                if pattern.match(line):
                    previous = lines[i - 1].strip() if i else ""
                    if "#" not in line and not previous.startswith("#"):
                        uncommented.append(path)
                    break
        self.assertEqual(uncommented, [])

    def test_sample_values_are_the_defaults_except_the_hostname(self):
        sample = load_config(SAMPLE, environ={})
        defaults = parse_config({})
        self.assertEqual(
            dataclasses.replace(sample, hostname=defaults.hostname, source=None), defaults
        )
