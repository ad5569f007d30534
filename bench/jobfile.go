package bench

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on a job file: ParseJobFile refuses anything larger.
const (
	MaxJobFileSize    = 1 << 20 // bytes
	MaxJobFileLine    = 4096    // bytes per line
	MaxJobSections    = 64      // job sections ([global] sections not counted)
	MaxSectionOptions = 256     // options per section
)

// Option is one fio option as written: in a job file (File and Line say
// where), a built-in profile, or on the command line (File "").
type Option struct {
	Key   string // canonical name (an alias such as blocksize is stored as bs)
	Value string // "" when Bare
	Bare  bool   // written without '=', as in "time_based"
	File  string
	Line  int
}

func (o Option) String() string {
	if o.Bare {
		return o.Key
	}
	return o.Key + "=" + o.Value
}

// where names where the option was written: "job.fio:7" or "the command line".
func (o Option) where() string {
	if o.File == "" {
		return "the command line"
	}
	return fmt.Sprintf("%s:%d", o.File, o.Line)
}

// JobFile is a parsed fio job file: its job sections in order.
type JobFile struct {
	Name     string // as given to ParseJobFile, for messages
	Sections []Section
}

// Section is one job section. Global holds the options of the [global]
// sections above it, in order: fio applies a [global] section only to the
// jobs below it.
type Section struct {
	Name    string
	Line    int
	Global  []Option
	Options []Option
}

// optionDef is a job-file option: how to apply its value to Flags.
type optionDef struct {
	bool bool // may be written bare (meaning 1)
	set  func(f *Flags, v string) error
}

// optionDefs are the fio options cfs bench takes, by canonical name. The
// flag of the same name on the command line sets the same field.
var optionDefs = map[string]optionDef{
	"name":            {set: strOption(func(f *Flags) *string { return &f.Name }, nil)},
	"rw":              {set: strOption(func(f *Flags) *string { return &f.RW }, checkMode)},
	"rwmixread":       {set: intOption(func(f *Flags) *int { return &f.RWMixRead })},
	"bs":              {set: strOption(func(f *Flags) *string { return &f.BS }, checkSize)},
	"bssplit":         {set: strOption(func(f *Flags) *string { return &f.BSSplit }, checkSplit)},
	"iodepth":         {set: intOption(func(f *Flags) *int { return &f.IODepth })},
	"numjobs":         {set: intOption(func(f *Flags) *int { return &f.NumJobs })},
	"size":            {set: strOption(func(f *Flags) *string { return &f.Size }, checkSize)},
	"offset":          {set: strOption(func(f *Flags) *string { return &f.Offset }, checkSize)},
	"runtime":         {set: strOption(func(f *Flags) *string { return &f.Runtime }, checkDuration)},
	"time_based":      {bool: true, set: boolOption(func(f *Flags) *bool { return &f.TimeBased })},
	"ramp_time":       {set: strOption(func(f *Flags) *string { return &f.RampTime }, checkDuration)},
	"direct":          {bool: true, set: directOption},
	"fsync":           {set: intOption(func(f *Flags) *int { return &f.Fsync })},
	"fdatasync":       {set: intOption(func(f *Flags) *int { return &f.Fdatasync })},
	"end_fsync":       {bool: true, set: boolOption(func(f *Flags) *bool { return &f.EndFsync })},
	"verify":          {set: strOption(func(f *Flags) *string { return &f.Verify }, nil)},
	"filename":        {set: strOption(func(f *Flags) *string { return &f.Filename }, nil)},
	"directory":       {set: strOption(func(f *Flags) *string { return &f.Directory }, nil)},
	"group_reporting": {bool: true, set: boolOption(func(f *Flags) *bool { return &f.GroupReporting })},
	"norandommap":     {bool: true, set: boolOption(func(f *Flags) *bool { return &f.NoRandomMap })},
	"ioengine":        {set: strOption(func(f *Flags) *string { return &f.IOEngine }, nil)},
	// Jobs always run one after another, so fio's stonewall changes
	// nothing; it is taken so that fio job files written for sequential
	// sections run unchanged.
	"stonewall": {bool: true, set: func(*Flags, string) error { return nil }},
}

func checkMode(v string) error {
	_, err := ParseMode(v)
	if err != nil {
		return fmt.Errorf("must be one of read, write, randread, randwrite, randrw, readwrite (rw)")
	}
	return nil
}

func checkSize(v string) error {
	_, err := ParseSize(v)
	return err
}

func checkSplit(v string) error {
	_, err := ParseBSSplit(v)
	return err
}

func checkDuration(v string) error {
	_, err := ParseDuration(v)
	return err
}

func strOption(field func(*Flags) *string, check func(string) error) func(*Flags, string) error {
	return func(f *Flags, v string) error {
		if check != nil {
			if err := check(v); err != nil {
				return err
			}
		}
		*field(f) = v
		return nil
	}
}

// optionAliases are fio's other names for options.
var optionAliases = map[string]string{
	"readwrite":         "rw",
	"blocksize":         "bs",
	"timeout":           "runtime",
	"wait_for_previous": "stonewall",
}

// IsJobOption reports whether name is a job option (the command-line flag
// of that name overrides the job file's value).
func IsJobOption(name string) bool {
	_, ok := optionDefs[name]
	return ok
}

// jobOptionNames lists the options cfs bench takes, sorted, for messages.
func jobOptionNames() string {
	names := make([]string, 0, len(optionDefs))
	for n := range optionDefs {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func intOption(field func(*Flags) *int) func(*Flags, string) error {
	return func(f *Flags, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("not an integer")
		}
		*field(f) = n
		return nil
	}
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on":
		return true, nil
	case "0", "false", "no", "off":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean: use 1 or 0")
}

func boolOption(field func(*Flags) *bool) func(*Flags, string) error {
	return func(f *Flags, v string) error {
		b, err := parseBool(v)
		if err != nil {
			return err
		}
		*field(f) = b
		return nil
	}
}

func directOption(f *Flags, v string) error {
	b, err := parseBool(v)
	if err != nil {
		return err
	}
	f.Direct = 0
	if b {
		f.Direct = 1
	}
	return nil
}

// apply sets the option on f; errors name the option and where it was
// written.
func (o Option) apply(f *Flags) error {
	def, ok := optionDefs[o.Key]
	if !ok {
		return Usagef("%s: option %q is not supported (cfs bench takes %s)", o.where(), o.Key, jobOptionNames())
	}
	v := o.Value
	if o.Bare {
		v = "1"
	}
	if err := def.set(f, v); err != nil {
		return Usagef("%s: %s: %v", o.where(), o, err)
	}
	return nil
}

// ParseJobFile parses a fio job file: sections headed [NAME], [global]
// sections whose options apply to the job sections below them, one option
// per line as key=value or a bare key (time_based), and lines starting with
// ';' or '#' as comments. Spaces around keys, values and '=' are ignored.
// Option names are checked here (an unsupported one is an error naming it,
// the file and the line) and values as far as one option alone allows;
// Specs checks the rest. fio's include directive and ${VAR} expansion are
// not supported. name is used in messages.
func ParseJobFile(name string, data []byte) (*JobFile, error) {
	jf := &JobFile{Name: name}
	switch {
	case len(data) > MaxJobFileSize:
		return nil, Usagef("%s: %d bytes: a job file is limited to %d", name, len(data), MaxJobFileSize)
	case bytes.IndexByte(data, 0) >= 0:
		return nil, Usagef("%s: holds a NUL byte: not a job file", name)
	}
	var global []Option
	var cur *Section // nil before the first section
	inGlobal := false
	scratch := DefaultFlags()
	for i, line := range bytes.Split(data, []byte("\n")) {
		ln := i + 1
		if len(line) > MaxJobFileLine {
			return nil, Usagef("%s:%d: a line is limited to %d bytes", name, ln, MaxJobFileLine)
		}
		if !utf8.Valid(line) {
			return nil, Usagef("%s:%d: not valid UTF-8", name, ln)
		}
		text := strings.TrimSpace(string(line))
		if text == "" || text[0] == ';' || text[0] == '#' {
			continue
		}
		if text[0] == '[' {
			sec, err := sectionName(name, ln, text)
			if err != nil {
				return nil, err
			}
			if sec == "global" {
				inGlobal, cur = true, nil
				continue
			}
			if len(jf.Sections) == MaxJobSections {
				return nil, Usagef("%s:%d: more than %d job sections", name, ln, MaxJobSections)
			}
			for _, s := range jf.Sections {
				if s.Name == sec {
					return nil, Usagef("%s:%d: a second job section [%s] (the first is at line %d)", name, ln, sec, s.Line)
				}
			}
			inGlobal = false
			jf.Sections = append(jf.Sections, Section{Name: sec, Line: ln, Global: append([]Option(nil), global...)})
			cur = &jf.Sections[len(jf.Sections)-1]
			continue
		}
		if !inGlobal && cur == nil {
			return nil, Usagef("%s:%d: %q comes before any section: start with [global] or [JOBNAME]", name, ln, text)
		}
		o, err := parseOptionLine(name, ln, text)
		if err != nil {
			return nil, err
		}
		if inGlobal && o.Key == "name" {
			return nil, Usagef("%s:%d: name= in [global]: jobs are named by their sections", name, ln)
		}
		if err := o.apply(&scratch); err != nil {
			return nil, err
		}
		if inGlobal {
			if len(global) == MaxSectionOptions {
				return nil, Usagef("%s:%d: more than %d options in [global] sections", name, ln, MaxSectionOptions)
			}
			global = append(global, o)
		} else {
			if len(cur.Options) == MaxSectionOptions {
				return nil, Usagef("%s:%d: more than %d options in section [%s]", name, ln, MaxSectionOptions, cur.Name)
			}
			cur.Options = append(cur.Options, o)
		}
	}
	if len(jf.Sections) == 0 {
		return nil, Usagef("%s: no job section: a job file needs at least one [JOBNAME] section", name)
	}
	return jf, nil
}

// sectionName parses "[NAME]".
func sectionName(file string, ln int, text string) (string, error) {
	if !strings.HasSuffix(text, "]") {
		return "", Usagef("%s:%d: %q: a section header is [NAME]", file, ln, text)
	}
	sec := strings.TrimSpace(text[1 : len(text)-1])
	switch {
	case sec == "":
		return "", Usagef("%s:%d: a section needs a name", file, ln)
	case len(sec) > maxNameLen || strings.IndexFunc(sec, func(r rune) bool { return unicode.IsControl(r) || r == '[' || r == ']' }) >= 0:
		return "", Usagef("%s:%d: section name %q: 1..%d printable characters without brackets", file, ln, sec, maxNameLen)
	}
	return sec, nil
}

// parseOptionLine parses "key=value" or a bare "key".
func parseOptionLine(file string, ln int, text string) (Option, error) {
	o := Option{File: file, Line: ln}
	key, value, hasValue := strings.Cut(text, "=")
	key = strings.TrimSpace(key)
	value = strings.TrimSpace(value)
	if f := strings.Fields(key); len(f) > 1 {
		if f[0] == "include" {
			return o, Usagef("%s:%d: fio's include directive is not supported: put the options in this file", file, ln)
		}
		return o, Usagef("%s:%d: %q: an option is key=value or a bare key", file, ln, text)
	}
	if canon, ok := optionAliases[key]; ok {
		key = canon
	}
	o.Key = key
	def, ok := optionDefs[key]
	switch {
	case key == "":
		return o, Usagef("%s:%d: %q: no option name before '='", file, ln, text)
	case !ok:
		return o, Usagef("%s:%d: option %q is not supported (cfs bench takes %s)", file, ln, key, jobOptionNames())
	case !hasValue && !def.bool:
		return o, Usagef("%s:%d: option %q needs a value (%s=VALUE)", file, ln, key, key)
	case hasValue && value == "":
		return o, Usagef("%s:%d: option %q has an empty value", file, ln, key)
	case strings.Contains(value, "${"):
		return o, Usagef("%s:%d: %s: fio's ${VAR} expansion is not supported", file, ln, text)
	}
	o.Value, o.Bare = value, !hasValue
	return o, nil
}

// Specs resolves each job section into a validated spec, in file order: the
// defaults in base (which also carries the run-wide settings: --target,
// --output-format, --progress), then the [global] options above the
// section, its own options, and last cli, the options given on the command
// line, which apply to every job as fio's command-line options do. A spec
// error names the file and the section.
func (jf *JobFile) Specs(base Flags, cli []Option) ([]*Spec, error) {
	specs := make([]*Spec, 0, len(jf.Sections))
	for i, sec := range jf.Sections {
		f := base
		f.Name = sec.Name
		direct := false
		for _, opts := range [][]Option{sec.Global, sec.Options, cli} {
			for _, o := range opts {
				if err := o.apply(&f); err != nil {
					return nil, err
				}
				direct = direct || o.Key == "direct"
			}
		}
		s, err := f.Spec()
		if err != nil {
			return nil, Usagef("%s: job [%s] (line %d): %v", jf.Name, sec.Name, sec.Line, err)
		}
		if !direct {
			s.Notes = append(s.Notes, fmt.Sprintf("%s: job [%s] sets no direct=: fio would do buffered I/O; cfs bench always does O_DIRECT (direct=1)", jf.Name, sec.Name))
		}
		s.GroupID = i
		s.GlobalOptions = append(append([]Option(nil), sec.Global...), cli...)
		s.JobOptions = sec.Options
		specs = append(specs, s)
	}
	return specs, nil
}

// CommandLineSpec is the spec of a run without a job file: one job from
// base with the command-line options cli (the flags given, as options),
// which the report lists as the job's options.
func CommandLineSpec(base Flags, cli []Option) (*Spec, error) {
	f := base
	for _, o := range cli {
		if err := o.apply(&f); err != nil {
			return nil, err
		}
	}
	s, err := f.Spec()
	if err != nil {
		return nil, err
	}
	s.JobOptions = cli
	return s, nil
}
